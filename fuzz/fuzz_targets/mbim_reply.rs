#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iotsafe_pkcs11_fuzz::mbim_reply(data));
