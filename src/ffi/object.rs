//! Object management and search (PKCS#11 §5.7).

use cryptoki_sys::*;

use super::util::{template, template_values, to_usize, write};
use crate::token::{self, module, object::AttrValue};

pkcs11_fn!(
    fn C_CreateObject(
        h_session: CK_SESSION_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
        ph_object: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        // The copy may hold a secret (a session secret key's CKA_VALUE): wiped after use.
        let attrs =
            zeroize::Zeroizing::new(unsafe { template_values(template(p_template, ul_count)?)? });
        if ph_object.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let object = m.create_object(h_session, &attrs)?;
        unsafe { write(ph_object, object) }
    }
);

pkcs11_fn!(
    fn C_CopyObject(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
        ph_new_object: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        let attrs =
            zeroize::Zeroizing::new(unsafe { template_values(template(p_template, ul_count)?)? });
        if ph_new_object.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let copy = m.copy_object(h_session, h_object, &attrs)?;
        unsafe { write(ph_new_object, copy) }
    }
);

pkcs11_fn!(
    fn C_DestroyObject(h_session: CK_SESSION_HANDLE, h_object: CK_OBJECT_HANDLE) {
        module()?.destroy_object(h_session, h_object)
    }
);

pkcs11_fn!(
    fn C_GetObjectSize(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        pul_size: CK_ULONG_PTR,
    ) {
        let m = module()?;
        if pul_size.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let obj = m.object(h_session, h_object)?;
        let value_len = match obj.attribute(CKA_VALUE) {
            Some(AttrValue::Bytes(v)) => v.len(),
            _ => 0,
        };
        unsafe { write(pul_size, value_len as CK_ULONG) }
    }
);

pkcs11_fn!(
    fn C_GetAttributeValue(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        let attrs = unsafe { template(p_template, ul_count)? };
        let obj = m.object(h_session, h_object)?;
        // PKCS#11 §5.7.5: every attribute is processed; the call reports one of the errors met.
        let mut result = CKR_OK;
        for a in attrs.iter_mut() {
            match token::attribute_value(&obj, a.type_) {
                None => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = CKR_ATTRIBUTE_TYPE_INVALID;
                }
                Some(AttrValue::Sensitive) => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = CKR_ATTRIBUTE_SENSITIVE;
                }
                Some(AttrValue::Bytes(v)) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else if to_usize(a.ulValueLen)? >= v.len() {
                        unsafe {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                        };
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = CKR_BUFFER_TOO_SMALL;
                    }
                }
            }
        }
        if result == CKR_OK {
            Ok(())
        } else {
            Err(result.into())
        }
    }
);

pkcs11_fn!(
    fn C_SetAttributeValue(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        let attrs =
            zeroize::Zeroizing::new(unsafe { template_values(template(p_template, ul_count)?)? });
        m.set_attribute_value(h_session, h_object, &attrs)
    }
);

pkcs11_fn!(
    fn C_FindObjectsInit(
        h_session: CK_SESSION_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        let wanted = unsafe { template_values(template(p_template, ul_count)?)? };
        m.find_init(h_session, &wanted)
    }
);

pkcs11_fn!(
    fn C_FindObjects(
        h_session: CK_SESSION_HANDLE,
        ph_object: CK_OBJECT_HANDLE_PTR,
        ul_max_object_count: CK_ULONG,
        pul_object_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        if pul_object_count.is_null() || (ph_object.is_null() && ul_max_object_count > 0) {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let found = m.find(h_session, to_usize(ul_max_object_count)?)?;
        for (i, h) in found.iter().enumerate() {
            unsafe { write(ph_object.add(i), *h)? };
        }
        unsafe { write(pul_object_count, found.len() as CK_ULONG) }
    }
);

pkcs11_fn!(
    fn C_FindObjectsFinal(h_session: CK_SESSION_HANDLE) {
        module()?.find_final(h_session)
    }
);
