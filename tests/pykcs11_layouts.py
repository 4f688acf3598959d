#!/usr/bin/env python3
"""PyKCS11 on one key layout of the simulator (tests/stack_key_layouts.rs runs it).

    pykcs11_layouts.py MODULE LABEL MESSAGE

Finds the private key labelled LABEL, then the certificate and the public key with the private
key's CKA_ID (how scripts pair a key with its certificate), signs MESSAGE with
CKM_ECDSA_SHA256. Prints "private keys: N", "key id: <hex>", "certificates with the key id: N",
"public keys with the key id: N", "certificate: <hex DER>", "signature: <hex r||s>". The
module's configuration comes from IOTSAFE_PKCS11_CONFIG.
"""
import sys

import PyKCS11


def main():
    module, label, message = sys.argv[1:4]
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    slots = lib.getSlotList(tokenPresent=True)
    if not slots:
        sys.exit("no slot with a token")
    session = lib.openSession(slots[0], PyKCS11.CKF_SERIAL_SESSION)

    keys = session.findObjects(
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, label)]
    )
    print(f"private keys: {len(keys)}", flush=True)
    if len(keys) != 1:
        sys.exit(1)
    key_id = bytes(session.getAttributeValue(keys[0], [PyKCS11.CKA_ID])[0])
    print(f"key id: {key_id.hex()}", flush=True)

    def with_key_id(cls):
        return session.findObjects([(PyKCS11.CKA_CLASS, cls), (PyKCS11.CKA_ID, key_id)])

    certs = with_key_id(PyKCS11.CKO_CERTIFICATE)
    print(f"certificates with the key id: {len(certs)}", flush=True)
    print(f"public keys with the key id: {len(with_key_id(PyKCS11.CKO_PUBLIC_KEY))}", flush=True)
    if len(certs) != 1:
        sys.exit(1)
    value = session.getAttributeValue(certs[0], [PyKCS11.CKA_VALUE])[0]
    print(f"certificate: {bytes(value).hex()}", flush=True)

    mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256, None)
    signature = session.sign(keys[0], message.encode(), mechanism)
    print(f"signature: {bytes(signature).hex()}", flush=True)
    session.closeSession()


if __name__ == "__main__":
    main()
