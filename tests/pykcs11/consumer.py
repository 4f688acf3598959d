#!/usr/bin/env python3
"""A PyKCS11 consumer, as Python users script a token (tests/stack_pykcs11.rs runs it).

    consumer.py MODULE sign MESSAGE   find the private key labelled "client", sign MESSAGE with
                                      CKM_ECDSA_SHA256, read the certificate labelled "client"
    consumer.py MODULE session-data   create a session data object (CKA_TOKEN false), find it
                                      by label, read it, destroy it, find it no more

The module's configuration comes from IOTSAFE_PKCS11_CONFIG. Every step prints one line
"step: result"; a PKCS#11 error prints its CKR_ name, so the test can assert exact outcomes.
"""
import sys

import PyKCS11


def rv_name(error):
    return PyKCS11.CKR.get(error.value, hex(error.value))


def step(name, action):
    """Runs action(); prints "name: <what it returned>" or "name: CKR_...". Returns (ok, value)."""
    try:
        value = action()
    except PyKCS11.PyKCS11Error as error:
        print(f"{name}: {rv_name(error)}", flush=True)
        return False, None
    return True, value


def token_session(lib):
    slots = lib.getSlotList(tokenPresent=True)
    print(f"slots with a token: {len(slots)}", flush=True)
    if not slots:
        sys.exit(1)
    flags = PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION
    return lib.openSession(slots[0], flags)


def sign(session, message):
    keys = session.findObjects(
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, "client")]
    )
    print(f"private keys labelled client: {len(keys)}", flush=True)
    if len(keys) != 1:
        sys.exit(1)
    mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256, None)
    ok, signature = step("sign", lambda: session.sign(keys[0], message.encode(), mechanism))
    if ok:
        print(f"signature: {bytes(signature).hex()}", flush=True)
    certs = session.findObjects(
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_CERTIFICATE), (PyKCS11.CKA_LABEL, "client")]
    )
    print(f"certificates labelled client: {len(certs)}", flush=True)
    if len(certs) == 1:
        value = session.getAttributeValue(certs[0], [PyKCS11.CKA_VALUE])[0]
        print(f"certificate: {bytes(value).hex()}", flush=True)


def session_data(session):
    label = "pykcs11-session-data"
    value = b"kept for this session only"
    template = [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_DATA),
        (PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE),
        (PyKCS11.CKA_PRIVATE, PyKCS11.CK_FALSE),
        (PyKCS11.CKA_LABEL, label),
        (PyKCS11.CKA_APPLICATION, "tests/pykcs11"),
        (PyKCS11.CKA_VALUE, value),
    ]
    ok, handle = step("create", lambda: session.createObject(template))
    if not ok:
        return
    print("create: CKR_OK", flush=True)
    by_label = [(PyKCS11.CKA_CLASS, PyKCS11.CKO_DATA), (PyKCS11.CKA_LABEL, label)]
    found = session.findObjects(by_label)
    print(f"found by label: {len(found)}", flush=True)
    ok, attrs = step(
        "read",
        lambda: session.getAttributeValue(
            handle, [PyKCS11.CKA_VALUE, PyKCS11.CKA_TOKEN, PyKCS11.CKA_APPLICATION]
        ),
    )
    if ok:
        print(f"read value: {bytes(attrs[0]).hex()}", flush=True)
        print(f"read token: {bool(attrs[1])}", flush=True)
        application = attrs[2] if isinstance(attrs[2], str) else bytes(attrs[2]).decode()
        print(f"read application: {application}", flush=True)
    ok, _ = step("destroy", lambda: session.destroyObject(handle))
    if ok:
        print("destroy: CKR_OK", flush=True)
    print(f"found after destroy: {len(session.findObjects(by_label))}", flush=True)


def main():
    module, mode = sys.argv[1], sys.argv[2]
    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    session = token_session(lib)
    if mode == "sign":
        sign(session, sys.argv[3])
    elif mode == "session-data":
        session_data(session)
    else:
        sys.exit(f"unknown mode {mode}")
    session.closeSession()


if __name__ == "__main__":
    main()
