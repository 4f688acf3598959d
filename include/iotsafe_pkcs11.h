/*
 * iotsafe_pkcs11.h — vendor-defined values of the iotsafe-pkcs11 module.
 *
 * Include the standard PKCS#11 header (pkcs11.h, version 3.0 or later) first; this file adds
 * only what the module defines itself. The module exports the standard C_GetFunctionList,
 * C_GetInterfaceList and C_GetInterface (interface "PKCS 11", versions 3.0 and 2.40).
 */
#ifndef IOTSAFE_PKCS11_H
#define IOTSAFE_PKCS11_H

/* Vendor attributes: IoT SAFE (GSMA IoT.05) facts about an object, read-only. */
/* The applet's object ID, raw bytes (also CKA_ID for keys; certificates take their key's ID). */
#define CKA_IOTSAFE_OBJECT_ID          (CKA_VENDOR_DEFINED | 0x49530001UL)
/* Key-specific usage (tag 4E): 1 general purpose, 2 TLS 1.2 CertificateVerify, 3 TLS 1.3. */
#define CKA_IOTSAFE_KEY_USAGE          (CKA_VENDOR_DEFINED | 0x49530002UL)
/* Object state (tag 4A): 1 activated, 0 deactivated. */
#define CKA_IOTSAFE_OBJECT_STATE       (CKA_VENDOR_DEFINED | 0x49530003UL)
/* Access conditions (tag 60): bit 1 read, bit 2 update. */
#define CKA_IOTSAFE_ACCESS_CONDITIONS  (CKA_VENDOR_DEFINED | 0x49530004UL)
/* Key type (tag 4B): 0x13 P-256 persistent, 0x14 P-256 volatile, 0xA0 secret (PSK). */
#define CKA_IOTSAFE_KEY_TYPE           (CKA_VENDOR_DEFINED | 0x49530005UL)
/* PSKs: key-derivation algorithms the card allows with the key (tag 94): bit 1 TLS 1.2 PRF,
 * bit 2 HKDF. */
#define CKA_IOTSAFE_KEY_DERIVATION     (CKA_VENDOR_DEFINED | 0x49530006UL)

/* Vendor mechanisms: the TLS 1.2 PRF keyed by the pre-master secret the card builds from a PSK
 * it stores (COMPUTE PRF modes 01 and 02). The base key is a PSK on the card (CKO_SECRET_KEY,
 * CKA_TOKEN true; its CKA_LABEL is the PSK identity); the result is a session
 * CKO_SECRET_KEY of CKA_VALUE_LEN bytes (default 48, at most 255), e.g. the master secret
 * with label "master secret" and seed client_random || server_random, or with label
 * "extended master secret" and seed = the session hash (RFC 7627).
 *   CKM_IOTSAFE_TLS12_PSK_KDF        RFC 4279 plain PSK:
 *                                    pre-master = uint16 N || N zero bytes || uint16 N || PSK
 *   CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF  RFC 5489 ECDHE-PSK (pOtherSecret = the ECDHE secret):
 *                                    pre-master = uint16 len || other || uint16 N || PSK
 * Standard mechanisms the card also computes: CKM_TLS12_MASTER_KEY_DERIVE(_DH),
 * CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE(_DH) and CKM_TLS12_KDF with a session secret key as
 * base (COMPUTE PRF mode 00), CKM_HKDF_DERIVE with a PSK on the card or a session key. */
#define CKM_IOTSAFE_TLS12_PSK_KDF        (CKM_VENDOR_DEFINED | 0x49530001UL)
#define CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF  (CKM_VENDOR_DEFINED | 0x49530002UL)

typedef struct CK_IOTSAFE_TLS12_PSK_KDF_PARAMS {
  CK_MECHANISM_TYPE prfHashMechanism; /* CKM_SHA256 (TLS 1.2 default) or CKM_SHA384 */
  CK_BYTE_PTR pLabel;                 /* e.g. "master secret", not empty */
  CK_ULONG ulLabelLen;
  CK_BYTE_PTR pSeed;                  /* e.g. client_random || server_random */
  CK_ULONG ulSeedLen;
  CK_BYTE_PTR pOtherSecret;           /* ECDHE-PSK: the ECDHE shared secret; PSK: NULL */
  CK_ULONG ulOtherSecretLen;          /* label + seed + other secret: at most ~240 bytes
                                         (one short APDU) */
} CK_IOTSAFE_TLS12_PSK_KDF_PARAMS;

/* Vendor return values. */
/* The object is being updated by a remote-management session of the card's security service
 * (IoT SAFE status word 6984, GSMA IoT.04 G4). Other objects keep working; retry later. */
#define CKR_IOTSAFE_OBJECT_BEING_UPDATED  (CKR_VENDOR_DEFINED | 0x49530001UL)
/* The object changed while the operation ran (status word 6989 after a remote update), or the
 * card's capacity is reached. The module has re-read the card's objects; retry. */
#define CKR_IOTSAFE_OBJECT_CHANGED        (CKR_VENDOR_DEFINED | 0x49530002UL)

/* Configuration (not C symbols): environment variables read by the module. */
#define IOTSAFE_PKCS11_ENV_CONFIG "IOTSAFE_PKCS11_CONFIG" /* path of the TOML configuration */
#define IOTSAFE_PKCS11_ENV_LOG    "IOTSAFE_PKCS11_LOG"    /* env_logger filter, e.g. "debug" */

/* Configuration keys of the TOML file (documented in docs/configuration.md). */
#define IOTSAFE_PKCS11_CFG_LOG                 "log"
#define IOTSAFE_PKCS11_CFG_PCSC_ENABLED        "pcsc.enabled"
#define IOTSAFE_PKCS11_CFG_PCSC_READERS        "pcsc.readers"
#define IOTSAFE_PKCS11_CFG_PCSC_EXCLUDE        "pcsc.exclude_readers"
#define IOTSAFE_PKCS11_CFG_APPLET_AIDS         "applet.aids"
#define IOTSAFE_PKCS11_CFG_APPLET_CLA          "applet.cla"
#define IOTSAFE_PKCS11_CFG_APPLET_CHANNEL      "applet.logical_channel"
#define IOTSAFE_PKCS11_CFG_APPLET_MAX_CHANNELS "applet.max_channels"
#define IOTSAFE_PKCS11_CFG_APPLET_PROVISIONING "applet.provisioning"
#define IOTSAFE_PKCS11_CFG_APPLET_TOKEN_LABEL  "applet.token_label"
#define IOTSAFE_PKCS11_CFG_MODEM               "modem"            /* array of tables */
#define IOTSAFE_PKCS11_CFG_MODEM_DEVICE        "modem.device"
#define IOTSAFE_PKCS11_CFG_MODEM_BAUD          "modem.baud"
#define IOTSAFE_PKCS11_CFG_MODEM_AT_MODE       "modem.at_mode"    /* "auto", "cgla", "csim" */
#define IOTSAFE_PKCS11_CFG_MODEM_MAX_CMD_LEN   "modem.max_command_len"
#define IOTSAFE_PKCS11_CFG_MODEM_TIMEOUT_MS    "modem.timeout_ms"
#define IOTSAFE_PKCS11_CFG_MODEM_SETUP_COMMANDS "modem.setup_commands" /* array of AT lines */
#define IOTSAFE_PKCS11_CFG_MODEM_LABEL         "modem.label"

/* This header needs the standard PKCS#11 types (CKA_VENDOR_DEFINED, CK_RV, ...). */
#ifndef CKA_VENDOR_DEFINED
#error "include a PKCS#11 header (e.g. the pkcs11.h beside this file) before iotsafe_pkcs11.h"
#endif

/* Values of the vendor attributes above (CK_BYTE arrays of length 1 unless stated). */
#define IOTSAFE_KEY_USAGE_GENERAL       0x01 /* CKA_IOTSAFE_KEY_USAGE: general purpose */
#define IOTSAFE_KEY_USAGE_TLS12_CV      0x02 /* TLS 1.2 CertificateVerify */
#define IOTSAFE_KEY_USAGE_TLS13_CV      0x03 /* TLS 1.3 CertificateVerify */
#define IOTSAFE_OBJECT_DEACTIVATED      0x00 /* CKA_IOTSAFE_OBJECT_STATE */
#define IOTSAFE_OBJECT_ACTIVATED        0x01
#define IOTSAFE_ACCESS_READ             0x01 /* CKA_IOTSAFE_ACCESS_CONDITIONS bits */
#define IOTSAFE_ACCESS_UPDATE           0x02
#define IOTSAFE_KEY_TYPE_P256           0x13 /* CKA_IOTSAFE_KEY_TYPE: NIST P-256, persistent */
#define IOTSAFE_KEY_TYPE_P256_VOLATILE  0x14 /* NIST P-256, volatile */
#define IOTSAFE_KEY_TYPE_SECRET         0xA0 /* secret key (PSK, HMAC-capable) */
#define IOTSAFE_KEY_DERIVATION_PRF      0x01 /* CKA_IOTSAFE_KEY_DERIVATION: TLS 1.2 PRF */
#define IOTSAFE_KEY_DERIVATION_HKDF     0x02 /* HKDF (RFC 5869) */

/* Interfaces (C_GetInterfaceList / C_GetInterface): "PKCS 11" 3.0 (the default, also what a
 * NULL name returns) and "PKCS 11" 2.40 (the same table C_GetFunctionList returns). */
#define IOTSAFE_PKCS11_INTERFACE_NAME   "PKCS 11"

/* Standard return values that carry an IoT SAFE meaning (the vendor ones are above):
 *   CKR_TOKEN_WRITE_PROTECTED   a write (C_SetAttributeValue, C_DestroyObject, C_CreateObject
 *                               of a token object) in a R/W session: the applet has no write
 *                               command for these objects
 *   CKR_SESSION_READ_ONLY       the same writes in a R/O session
 *   CKR_ACTION_PROHIBITED       C_CopyObject (card keys cannot be copied); C_DestroyObject and
 *                               C_SetAttributeValue of a secret key (a PSK never changes or
 *                               goes through the device, IoT.04 I9)
 *   CKR_ATTRIBUTE_SENSITIVE     CKA_VALUE of a PSK or of any private key
 *   CKR_USER_TYPE_INVALID       C_Login(CKU_SO): there is no security officer (no PIN at all;
 *                               C_Login(CKU_USER) accepts any PIN and only changes the state)
 *   CKR_RANDOM_SEED_NOT_SUPPORTED  C_SeedRandom (the card's RNG cannot be seeded)
 *   CKR_DEVICE_ERROR            the applet answered an error status word (logged at warn)
 *   CKR_DEVICE_REMOVED          the card went away; once per session, then
 *                               CKR_SESSION_HANDLE_INVALID
 *   CKR_TOKEN_NOT_PRESENT       a reader without an IoT SAFE card
 *   CKR_GENERAL_ERROR           C_Initialize: the configuration (file or pReserved) is invalid
 *   CKR_FUNCTION_NOT_SUPPORTED  functions the token does not offer (encryption, wrapping,
 *                               secret-key generation, PIN management)
 */

#endif /* IOTSAFE_PKCS11_H */
