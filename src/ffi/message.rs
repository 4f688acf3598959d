//! Message-based encryption, decryption, signing and verification (PKCS#11 3.0 §5.9, §5.11,
//! §5.14, §5.16): not offered. Functions with the same parameters are declared together.

use cryptoki_sys::*;

not_supported!(
    C_MessageEncryptInit |
    C_MessageDecryptInit |
    C_MessageSignInit |
    C_MessageVerifyInit(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        h_key: CK_OBJECT_HANDLE,
    )
);
not_supported!(
    C_MessageEncryptFinal |
    C_MessageDecryptFinal |
    C_MessageSignFinal |
    C_MessageVerifyFinal(h_session: CK_SESSION_HANDLE)
);

not_supported!(C_EncryptMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
    p_plaintext: CK_BYTE_PTR,
    ul_plaintext_len: CK_ULONG,
    p_ciphertext: CK_BYTE_PTR,
    pul_ciphertext_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
    p_ciphertext: CK_BYTE_PTR,
    ul_ciphertext_len: CK_ULONG,
    p_plaintext: CK_BYTE_PTR,
    pul_plaintext_len: CK_ULONG_PTR,
));
not_supported!(
    C_EncryptMessageBegin |
    C_DecryptMessageBegin(
        h_session: CK_SESSION_HANDLE,
        p_parameter: CK_VOID_PTR,
        ul_parameter_len: CK_ULONG,
        p_associated_data: CK_BYTE_PTR,
        ul_associated_data_len: CK_ULONG,
    )
);
not_supported!(C_EncryptMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_plaintext_part: CK_BYTE_PTR,
    ul_plaintext_part_len: CK_ULONG,
    p_ciphertext_part: CK_BYTE_PTR,
    pul_ciphertext_part_len: CK_ULONG_PTR,
    flags: CK_FLAGS,
));
not_supported!(C_DecryptMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_ciphertext_part: CK_BYTE_PTR,
    ul_ciphertext_part_len: CK_ULONG,
    p_plaintext_part: CK_BYTE_PTR,
    pul_plaintext_part_len: CK_ULONG_PTR,
    flags: CK_FLAGS,
));

not_supported!(
    C_SignMessageBegin |
    C_VerifyMessageBegin(
        h_session: CK_SESSION_HANDLE,
        p_parameter: CK_VOID_PTR,
        ul_parameter_len: CK_ULONG,
    )
);
not_supported!(
    C_SignMessage |
    C_SignMessageNext(
        h_session: CK_SESSION_HANDLE,
        p_parameter: CK_VOID_PTR,
        ul_parameter_len: CK_ULONG,
        p_data: CK_BYTE_PTR,
        ul_data_len: CK_ULONG,
        p_signature: CK_BYTE_PTR,
        pul_signature_len: CK_ULONG_PTR,
    )
);
not_supported!(
    C_VerifyMessage |
    C_VerifyMessageNext(
        h_session: CK_SESSION_HANDLE,
        p_parameter: CK_VOID_PTR,
        ul_parameter_len: CK_ULONG,
        p_data: CK_BYTE_PTR,
        ul_data_len: CK_ULONG,
        p_signature: CK_BYTE_PTR,
        ul_signature_len: CK_ULONG,
    )
);
