//! The audited helpers every entry point uses for raw pointers and lengths.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;
use log::{debug, error, warn};

use crate::error::{Error, Result, rv_name};

/// The one wrapper shape of every `C_*` function: catch panics, run the safe body, map the
/// result to a `CK_RV` and log errors.
pub fn entry(name: &str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => {
            if e.is_device_problem() {
                warn!("{name}: {e}");
            } else {
                debug!("{name}: {e}");
            }
            e.rv()
        }
        Err(_) => {
            error!(
                "{name}: internal error (panic); returning {}",
                rv_name(CKR_GENERAL_ERROR)
            );
            CKR_GENERAL_ERROR
        }
    }
}

pub fn to_usize(v: CK_ULONG) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::new(CKR_ARGUMENTS_BAD, "length out of range"))
}

/// A caller's input buffer. NULL is allowed only with length 0.
///
/// # Safety
/// `ptr` must point to `len` readable bytes when it is not NULL.
pub unsafe fn in_bytes<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8]> {
    let len = to_usize(len)?;
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::new(
            CKR_ARGUMENTS_BAD,
            "NULL data pointer with a non-zero length",
        ));
    }
    // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes one value through an output pointer.
///
/// # Safety
/// `ptr` must be NULL or valid for writing a `T`.
pub unsafe fn write<T>(ptr: *mut T, value: T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD, "NULL output pointer"));
    }
    // SAFETY: checked non-NULL; the caller guarantees it is writable.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Reads one value through an input pointer.
///
/// # Safety
/// `ptr` must be NULL or valid for reading a `T`.
pub unsafe fn read<T>(ptr: *const T) -> Result<T> {
    if ptr.is_null() {
        return Err(Error::new(CKR_ARGUMENTS_BAD, "NULL input pointer"));
    }
    // SAFETY: checked non-NULL; the caller guarantees it is readable.
    Ok(unsafe { ptr.read_unaligned() })
}

/// The PKCS#11 output-buffer convention in one place: a NULL buffer → only the length is
/// written (`Ok(None)`); a buffer shorter than `needed` → the length is written and
/// `CKR_BUFFER_TOO_SMALL`; otherwise the buffer to fill. Nothing is computed before this says so.
///
/// # Safety
/// `out` must be NULL or point to `*out_len` writable bytes; `out_len` must be NULL or valid.
pub unsafe fn output_buffer<'a>(
    out: *mut u8,
    out_len: *mut CK_ULONG,
    needed: usize,
) -> Result<Option<&'a mut [u8]>> {
    // SAFETY: the caller guarantees `out_len` is valid when not NULL.
    let capacity = unsafe { read(out_len as *const CK_ULONG)? };
    // SAFETY: as above.
    unsafe { write(out_len, needed as CK_ULONG)? };
    if out.is_null() {
        return Ok(None);
    }
    if to_usize(capacity)? < needed {
        return Err(Error::new(
            CKR_BUFFER_TOO_SMALL,
            format!("{needed} bytes needed"),
        ));
    }
    // SAFETY: the caller guarantees `capacity` (≥ needed) writable bytes at `out`.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(out, needed) }))
}

/// The PKCS#11 list convention (`C_GetSlotList`, `C_GetMechanismList`, `C_GetInterfaceList`):
/// the count is always written; a NULL list → only the count; a list shorter than `items` →
/// `CKR_BUFFER_TOO_SMALL`; otherwise the items. `items` runs after `count` was checked.
///
/// # Safety
/// `count` must be NULL or valid; `list` must be NULL or point to `*count` writable entries.
pub unsafe fn list_output<T: Copy>(
    list: *mut T,
    count: *mut CK_ULONG,
    items: impl FnOnce() -> Result<Vec<T>>,
) -> Result<()> {
    // SAFETY: the caller guarantees `count` is valid when not NULL.
    let capacity = unsafe { read(count as *const CK_ULONG)? };
    let items = items()?;
    // SAFETY: as above.
    unsafe { write(count, items.len() as CK_ULONG)? };
    if list.is_null() {
        return Ok(());
    }
    if to_usize(capacity)? < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL.into());
    }
    for (i, item) in items.into_iter().enumerate() {
        // SAFETY: i < capacity entries, which the caller guarantees writable.
        unsafe { write(list.add(i), item)? };
    }
    Ok(())
}

/// The caller's attribute template. NULL is allowed only with count 0.
///
/// # Safety
/// `ptr` must point to `count` attributes when not NULL.
pub unsafe fn template<'a>(
    ptr: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a mut [CK_ATTRIBUTE]> {
    let count = to_usize(count)?;
    if ptr.is_null() {
        if count == 0 {
            return Ok(&mut []);
        }
        return Err(Error::new(
            CKR_ARGUMENTS_BAD,
            "NULL template with a non-zero count",
        ));
    }
    // SAFETY: the caller guarantees `count` attributes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, count) })
}

/// Copies a template's (type, value) pairs, e.g. for `C_FindObjectsInit`.
///
/// # Safety
/// Every attribute's `pValue` must be NULL or point to `ulValueLen` readable bytes.
pub unsafe fn template_values(attrs: &[CK_ATTRIBUTE]) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    attrs
        .iter()
        .map(|a| {
            // SAFETY: the caller guarantees the value pointers.
            let v = unsafe { in_bytes(a.pValue as *const u8, a.ulValueLen)? };
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// The mechanism type and whether a parameter came with it.
///
/// # Safety
/// `ptr` must be NULL or point to a `CK_MECHANISM`.
pub unsafe fn mechanism(ptr: *const CK_MECHANISM) -> Result<(CK_MECHANISM_TYPE, bool)> {
    // SAFETY: the caller guarantees the pointer.
    let m = unsafe { read(ptr)? };
    Ok((
        m.mechanism,
        !m.pParameter.is_null() || m.ulParameterLen != 0,
    ))
}

/// A blank-padded, not NUL-terminated PKCS#11 string field (truncated at a char boundary).
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_blank_and_utf8_safe() {
        assert_eq!(&padded::<4>("ab"), b"ab  ");
        assert_eq!(&padded::<3>("abcd"), b"abc");
        assert_eq!(&padded::<3>("aé!"), b"a\xC3\xA9");
        assert_eq!(&padded::<2>("aé"), b"a ");
    }

    #[test]
    fn output_buffer_convention() {
        let mut len: CK_ULONG = 0;
        let r = unsafe { output_buffer(std::ptr::null_mut(), &mut len, 64) }.unwrap();
        assert!(r.is_none());
        assert_eq!(len, 64);
        let mut buf = [0u8; 10];
        let mut len: CK_ULONG = 10;
        let e = unsafe { output_buffer(buf.as_mut_ptr(), &mut len, 64) }.unwrap_err();
        assert_eq!(e.rv(), CKR_BUFFER_TOO_SMALL);
        assert_eq!(len, 64);
        let e = unsafe { output_buffer(buf.as_mut_ptr(), std::ptr::null_mut(), 64) }.unwrap_err();
        assert_eq!(e.rv(), CKR_ARGUMENTS_BAD);
    }

    #[test]
    fn panics_become_general_error() {
        assert_eq!(entry("test", || panic!("boom")), CKR_GENERAL_ERROR);
        assert_eq!(
            entry("test", || Err(CKR_SLOT_ID_INVALID.into())),
            CKR_SLOT_ID_INVALID
        );
    }
}
