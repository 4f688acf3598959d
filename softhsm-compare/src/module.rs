//! A PKCS#11 module loaded with `dlopen`, called through its raw function list, so that the
//! checklist can pass exactly the arguments it wants (NULL pointers, short buffers, partial
//! mutex callbacks, ...) — which the safe `cryptoki` API deliberately cannot.

use std::ffi::{CString, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cryptoki_sys::*;

pub struct Module {
    handle: *mut c_void,
    list: *const CK_FUNCTION_LIST,
}

// The function list is immutable once returned; modules are called from several threads in
// the threads check (the module promises its own locking after CKF_OS_LOCKING_OK).
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    /// `dlopen(RTLD_NOW | RTLD_LOCAL)` and `C_GetFunctionList`.
    pub fn load(path: &Path) -> Result<Module, String> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            let err = unsafe { std::ffi::CStr::from_ptr(libc::dlerror()) };
            return Err(format!(
                "dlopen {}: {}",
                path.display(),
                err.to_string_lossy()
            ));
        }
        let mut m = Module {
            handle,
            list: std::ptr::null(),
        };
        let get = m
            .symbol("C_GetFunctionList")
            .ok_or_else(|| format!("{} exports no C_GetFunctionList", path.display()))?;
        let get: unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV =
            unsafe { std::mem::transmute(get) };
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        let rv = unsafe { get(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!("C_GetFunctionList returned {rv:#x}"));
        }
        m.list = list;
        Ok(m)
    }

    /// An exported symbol of the module.
    pub fn symbol(&self, name: &str) -> Option<*mut c_void> {
        let c = CString::new(name).unwrap();
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    /// The 2.40 function table returned by `C_GetFunctionList`.
    pub fn f(&self) -> &CK_FUNCTION_LIST {
        unsafe { &*self.list }
    }
}

/// Calls one function of the table: `call!(m, C_GetInfo, &mut info)`.
#[macro_export]
macro_rules! call {
    ($m:expr, $f:ident $(, $a:expr)* $(,)?) => {
        unsafe { ($m.f().$f.expect(concat!(stringify!($f), " missing in the function list")))($($a),*) }
    };
}
