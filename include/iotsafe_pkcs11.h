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
/* Key type (tag 4B): 0x13 P-256 persistent, 0x14 P-256 volatile. */
#define CKA_IOTSAFE_KEY_TYPE           (CKA_VENDOR_DEFINED | 0x49530005UL)

/* Configuration (not C symbols): environment variables read by the module. */
#define IOTSAFE_PKCS11_ENV_CONFIG "IOTSAFE_PKCS11_CONFIG" /* path of the TOML configuration */
#define IOTSAFE_PKCS11_ENV_LOG    "IOTSAFE_PKCS11_LOG"    /* env_logger filter, e.g. "debug" */

/* Configuration keys of the TOML file (documented in README.md). */
#define IOTSAFE_PKCS11_CFG_LOG                 "log"
#define IOTSAFE_PKCS11_CFG_PCSC_ENABLED        "pcsc.enabled"
#define IOTSAFE_PKCS11_CFG_PCSC_READERS        "pcsc.readers"
#define IOTSAFE_PKCS11_CFG_PCSC_EXCLUDE        "pcsc.exclude_readers"
#define IOTSAFE_PKCS11_CFG_APPLET_AIDS         "applet.aids"
#define IOTSAFE_PKCS11_CFG_APPLET_CLA          "applet.cla"
#define IOTSAFE_PKCS11_CFG_APPLET_CHANNEL      "applet.logical_channel"
#define IOTSAFE_PKCS11_CFG_APPLET_TOKEN_LABEL  "applet.token_label"

#endif /* IOTSAFE_PKCS11_H */
