//! `guard_audit_fast`: the native front of guard's Python audit hook (`python_hook.py`).
//!
//! An import raises several audit events, and with a hook written in Python each one runs
//! Python code: the call itself, `sys._getframe`, and every `frame.f_code`, which raises an
//! event of its own. On an import storm that was 4 to 6 % of the run (#20). This module
//! gives the hook module a callable, made by [`hook_for`], that the interpreter calls
//! instead. It answers the events the hook does not watch at once, and the import system's
//! own events (the `exec` of a module's code by the stock loader, the `marshal.loads` of
//! bytecode a stock loader read) by the same identities the Python hook checks. Everything
//! else, and anything it cannot establish, goes to the Python hook, which decides as it
//! always did: this module can only skip what the Python hook would have passed, never
//! pass what it would have refused or recorded.
//!
//! It is built for CPython's stable ABI (`.abi3.so`) and links no libpython: the
//! interpreter that loads it provides the functions (3.9 and later; an older one fails the
//! import, and the hook module then runs without it).

// The whole crate is the boundary with the CPython C API: each block says why it holds.
#![allow(unsafe_code)]
// Built by guard's build script with panic = "abort", the module uses no std: the
// interpreter then maps 8 KiB and no libgcc_s at every start (about 100 us to load here,
// against 260 us linked with std). Built otherwise (clippy, tests), it links std.
#![cfg_attr(panic = "abort", no_std)]

use core::ffi::{c_char, c_int, c_long, c_void};
use core::ptr::{null, null_mut};

/// Nothing here panics on purpose; if it did, the process stops (as an extension module
/// built with `panic = "abort"` would).
#[cfg(panic = "abort")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    unsafe extern "C" {
        safe fn abort() -> !;
    }
    abort()
}

/// A CPython object, only ever behind a pointer.
#[repr(C)]
pub struct PyObject {
    _opaque: [u8; 0],
}

/// `PyObject_HEAD` of a non-free-threaded build: the start of `PyModuleDef_Base`.
#[repr(C)]
struct ObjectHead {
    refcnt: isize,
    ty: *mut c_void,
}

#[repr(C)]
struct ModuleDefBase {
    head: ObjectHead,
    init: Option<unsafe extern "C" fn() -> *mut PyObject>,
    index: isize,
    copy: *mut PyObject,
}

#[repr(C)]
struct ModuleDef {
    base: ModuleDefBase,
    name: *const c_char,
    doc: *const c_char,
    size: isize,
    methods: *mut MethodDef,
    slots: *mut c_void,
    traverse: *mut c_void,
    clear: *mut c_void,
    free: *mut c_void,
}

#[repr(C)]
struct MethodDef {
    name: *const c_char,
    meth: *const c_void,
    flags: c_int,
    doc: *const c_char,
}

const METH_VARARGS: c_int = 0x0001;
const METH_FASTCALL: c_int = 0x0080;
/// `PYTHON_ABI_VERSION`: what a stable-ABI module passes to `PyModule_Create2`.
const PYTHON_ABI_VERSION: c_int = 3;

unsafe extern "C" {
    fn PyModule_Create2(def: *mut ModuleDef, api_version: c_int) -> *mut PyObject;
    fn PyCFunction_NewEx(
        def: *mut MethodDef,
        bound: *mut PyObject,
        module: *mut PyObject,
    ) -> *mut PyObject;
    fn PyTuple_Size(tuple: *mut PyObject) -> isize;
    fn PyTuple_GetItem(tuple: *mut PyObject, at: isize) -> *mut PyObject;
    fn PyTuple_New(len: isize) -> *mut PyObject;
    fn PyTuple_SetItem(tuple: *mut PyObject, at: isize, item: *mut PyObject) -> c_int;
    fn PyDict_GetItem(dict: *mut PyObject, key: *mut PyObject) -> *mut PyObject;
    fn PyDict_SetItem(dict: *mut PyObject, key: *mut PyObject, value: *mut PyObject) -> c_int;
    fn PyDict_Size(dict: *mut PyObject) -> isize;
    fn PyDict_New() -> *mut PyObject;
    fn PyLong_FromVoidPtr(pointer: *mut c_void) -> *mut PyObject;
    fn PyLong_AsLong(number: *mut PyObject) -> c_long;
    fn PyEval_GetFrame() -> *mut PyObject;
    fn PyFrame_GetCode(frame: *mut PyObject) -> *mut PyObject;
    fn PyFrame_GetBack(frame: *mut PyObject) -> *mut PyObject;
    fn PyObject_GetAttrString(object: *mut PyObject, name: *const c_char) -> *mut PyObject;
    fn PyObject_GetItem(object: *mut PyObject, key: *mut PyObject) -> *mut PyObject;
    fn PyObject_Type(object: *mut PyObject) -> *mut PyObject;
    fn PyObject_Call(
        callable: *mut PyObject,
        args: *mut PyObject,
        kwargs: *mut PyObject,
    ) -> *mut PyObject;
    fn PyErr_Clear();
    fn PyErr_SetString(kind: *mut PyObject, message: *const c_char);
    fn Py_IncRef(object: *mut PyObject);
    fn Py_DecRef(object: *mut PyObject);
    static PyExc_TypeError: *mut PyObject;
    static PyUnicode_Type: PyObject;
    static _Py_NoneStruct: PyObject;
}

/// A reference this code owns (a "new reference"), released when dropped; null is none.
struct Owned(*mut PyObject);

impl Owned {
    fn get(&self) -> Option<*mut PyObject> {
        (!self.0.is_null()).then_some(self.0)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: a new reference this code owns, or null (Py_DecRef ignores it); the GIL
        // is held wherever one is made (module functions and audit hooks run under it).
        unsafe { Py_DecRef(self.0) }
    }
}

/// What the Python hook module hands [`hook_for`], in this order (a tuple, kept as the
/// hook's bound object, so the hook holds no global state).
mod bound {
    /// The Python hook: `hook(event, args)`.
    pub(crate) const PYTHON_HOOK: isize = 0;
    /// `{event: kind}` for every event the Python hook watches (see [`super::Kind`]).
    pub(crate) const KINDS: isize = 1;
    /// An empty dict this module fills: `{event: {id(code): code}}`, the calling code each
    /// event is settled for (the Python hook returned that code object).
    pub(crate) const SETTLED: isize = 2;
    /// `_bootstrap.FrozenImporter.exec_module.__code__`.
    pub(crate) const FROZEN_EXEC: isize = 3;
    /// The code of the function `_bootstrap.FrozenImporter.get_code` wraps.
    pub(crate) const FROZEN_GET_CODE: isize = 4;
    /// `_bootstrap._call_with_frames_removed.__code__`.
    pub(crate) const FRAMES_REMOVED: isize = 5;
    /// `_bootstrap_external._LoaderBasics.exec_module.__code__`.
    pub(crate) const EXEC_MODULE: isize = 6;
    /// `_bootstrap_external._compile_bytecode.__code__`.
    pub(crate) const COMPILE_BYTECODE: isize = 7;
    /// `_bootstrap_external.SourceLoader.get_code.__code__`.
    pub(crate) const SOURCE_GET_CODE: isize = 8;
    /// `_bootstrap_external.SourcelessFileLoader.get_code.__code__`.
    pub(crate) const SOURCELESS_GET_CODE: isize = 9;
    /// `_bootstrap_external.FileLoader.get_data` (the function).
    pub(crate) const STOCK_GET_DATA: isize = 10;
    /// The strings `"self"`, `"bytecode_path"`, `"path"` (the locals read).
    pub(crate) const SELF_NAME: isize = 11;
    pub(crate) const BYTECODE_PATH_NAME: isize = 12;
    pub(crate) const PATH_NAME: isize = 13;
    pub(crate) const LEN: isize = 14;
}

/// What an event is to this module, as the hook module's `{event: kind}` says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    MarshalLoads,
    /// Watched, decided by the Python hook.
    Other,
}

impl Kind {
    fn from_number(number: c_long) -> Kind {
        match number {
            1 => Kind::Exec,
            2 => Kind::MarshalLoads,
            _ => Kind::Other,
        }
    }
}

/// The bound tuple's item `at` (borrowed).
///
/// # Safety
/// `bound` is the tuple [`hook_for`] checked to have [`bound::LEN`] items; GIL held.
unsafe fn item(bound: *mut PyObject, at: isize) -> *mut PyObject {
    // SAFETY: per this function's contract, `at` is within the tuple.
    unsafe { PyTuple_GetItem(bound, at) }
}

/// The code object `frame` runs (owned), or none.
///
/// # Safety
/// `frame` is a frame object; GIL held.
unsafe fn code_of(frame: *mut PyObject) -> Owned {
    // SAFETY: per contract; PyFrame_GetCode returns a new reference.
    Owned(unsafe { PyFrame_GetCode(frame) })
}

/// The frame that called `frame` (owned), or none.
///
/// # Safety
/// `frame` is a frame object; GIL held.
unsafe fn back_of(frame: *mut PyObject) -> Owned {
    // SAFETY: per contract; PyFrame_GetBack returns a new reference or null, never an
    // error.
    Owned(unsafe { PyFrame_GetBack(frame) })
}

/// `frame.f_locals[name]` (owned), or none; an error on the way is cleared (no answer).
///
/// # Safety
/// `frame` is a frame object, `name` a str; GIL held.
unsafe fn local(locals: *mut PyObject, name: *mut PyObject) -> Owned {
    // SAFETY: per contract; a failed lookup sets an exception this code clears, so the
    // hook returns with none pending.
    unsafe {
        let value = PyObject_GetItem(locals, name);
        if value.is_null() {
            PyErr_Clear();
        }
        Owned(value)
    }
}

/// The Python hook's `from_a_code_file` for an `exec`: a module frozen into the
/// interpreter (run by `FrozenImporter.exec_module`), or one run by
/// `_call_with_frames_removed` called by the stock loaders' `exec_module`.
///
/// # Safety
/// As [`item`].
unsafe fn stock_exec(bound: *mut PyObject) -> bool {
    // SAFETY: GIL held (an audit hook); PyEval_GetFrame returns a borrowed frame or null,
    // each frame handed on below is a live frame object.
    unsafe {
        let frame = PyEval_GetFrame();
        if frame.is_null() {
            return false;
        }
        let code = code_of(frame);
        if code.get() == Some(item(bound, bound::FROZEN_EXEC)) {
            return true;
        }
        if code.get() != Some(item(bound, bound::FRAMES_REMOVED)) {
            return false;
        }
        let caller = back_of(frame);
        let Some(caller) = caller.get() else {
            return false;
        };
        code_of(caller).get() == Some(item(bound, bound::EXEC_MODULE))
    }
}

/// The Python hook's `from_a_code_file` for a `marshal.loads`: a frozen module's code,
/// unmarshalled from the interpreter's own table by `FrozenImporter.get_code` or (through
/// `_call_with_frames_removed`) its `exec_module`, as 3.13 reports it; or bytecode
/// unmarshalled by `_compile_bytecode`, called by a stock `get_code` whose loader reads
/// with the stock `get_data` from a path that is a plain `str` (the hook's `stock_read`).
///
/// # Safety
/// As [`item`].
unsafe fn stock_bytecode(bound: *mut PyObject) -> bool {
    // SAFETY: GIL held (an audit hook); frames as in `stock_exec`; every object read is
    // owned for as long as it is used, and every failed call's exception is cleared.
    unsafe {
        let frame = PyEval_GetFrame();
        if frame.is_null() {
            return false;
        }
        let code = code_of(frame);
        if code.get() == Some(item(bound, bound::FROZEN_GET_CODE)) {
            return true;
        }
        let frozen = code.get() == Some(item(bound, bound::FRAMES_REMOVED));
        if !frozen && code.get() != Some(item(bound, bound::COMPILE_BYTECODE)) {
            return false;
        }
        let caller = back_of(frame);
        let Some(caller) = caller.get() else {
            return false;
        };
        let code = code_of(caller);
        if frozen {
            return code.get() == Some(item(bound, bound::FROZEN_EXEC));
        }
        let path_name = if code.get() == Some(item(bound, bound::SOURCE_GET_CODE)) {
            item(bound, bound::BYTECODE_PATH_NAME)
        } else if code.get() == Some(item(bound, bound::SOURCELESS_GET_CODE)) {
            item(bound, bound::PATH_NAME)
        } else {
            return false;
        };
        let locals = Owned(PyObject_GetAttrString(caller, c"f_locals".as_ptr()));
        let Some(locals) = locals.get() else {
            PyErr_Clear();
            return false;
        };
        let loader = local(locals, item(bound, bound::SELF_NAME));
        let Some(loader) = loader.get() else {
            return false;
        };
        let loader_type = Owned(PyObject_Type(loader));
        let Some(loader_type) = loader_type.get() else {
            PyErr_Clear();
            return false;
        };
        let get_data = Owned(PyObject_GetAttrString(loader_type, c"get_data".as_ptr()));
        if get_data.get() != Some(item(bound, bound::STOCK_GET_DATA)) {
            PyErr_Clear();
            return false;
        }
        let path = local(locals, path_name);
        let Some(path) = path.get() else {
            return false;
        };
        let path_type = Owned(PyObject_Type(path));
        path_type.get() == Some((&raw const PyUnicode_Type).cast_mut())
    }
}

/// Calling code settled for an event at most this many times over (a bound on what the
/// module holds; past it, the Python hook is asked, as without this module).
const SETTLED_MAX: isize = 4096;

/// Whether the Python hook settled `event` for the code `frame` runs.
///
/// # Safety
/// As [`item`]; `event` a str.
unsafe fn settled(bound: *mut PyObject, event: *mut PyObject, frame: *mut PyObject) -> bool {
    // SAFETY: GIL held; borrowed dict items are used before anything can change the dicts.
    unsafe {
        let codes = PyDict_GetItem(item(bound, bound::SETTLED), event);
        if codes.is_null() {
            return false;
        }
        let code = code_of(frame);
        let Some(code) = code.get() else {
            return false;
        };
        let id = Owned(PyLong_FromVoidPtr(code.cast()));
        let Some(id) = id.get() else {
            PyErr_Clear();
            return false;
        };
        // Keyed by address, and the value holds the code object: the address cannot be
        // another object's while the entry exists.
        !PyDict_GetItem(codes, id).is_null()
    }
}

/// Records that the Python hook settled `event` for the code object `code` (what it
/// returned: the code of the frame it judged). Nothing is recorded when that cannot be
/// done (the hook is then asked again).
///
/// # Safety
/// As [`item`]; `event` a str, `code` an object.
unsafe fn settle(bound: *mut PyObject, event: *mut PyObject, code: *mut PyObject) {
    // SAFETY: GIL held; every reference made here is owned and released, and every failed
    // call's exception cleared.
    unsafe {
        let all = item(bound, bound::SETTLED);
        let mut codes = PyDict_GetItem(all, event);
        if codes.is_null() {
            if PyDict_Size(all) >= SETTLED_MAX {
                return;
            }
            let made = Owned(PyDict_New());
            let Some(made) = made.get() else {
                PyErr_Clear();
                return;
            };
            if PyDict_SetItem(all, event, made) != 0 {
                PyErr_Clear();
                return;
            }
            codes = made;
        }
        if PyDict_Size(codes) >= SETTLED_MAX {
            return;
        }
        let id = Owned(PyLong_FromVoidPtr(code.cast()));
        let Some(id) = id.get() else {
            PyErr_Clear();
            return;
        };
        if PyDict_SetItem(codes, id, code) != 0 {
            PyErr_Clear();
        }
    }
}

/// A new reference to None.
///
/// # Safety
/// GIL held.
unsafe fn none() -> *mut PyObject {
    // SAFETY: None is a static object; its reference is counted as any other's.
    unsafe {
        let none = (&raw const _Py_NoneStruct).cast_mut();
        Py_IncRef(none);
        none
    }
}

/// The audit hook: `hook(event, args)`, bound to the tuple [`hook_for`] made.
unsafe extern "C" fn hook(
    bound: *mut PyObject,
    args: *const *mut PyObject,
    nargs: isize,
) -> *mut PyObject {
    // SAFETY: called by the interpreter with the GIL held, `args` holding `nargs` borrowed
    // objects (METH_FASTCALL); `bound` is the tuple hook_for checked.
    unsafe {
        if nargs != 2 {
            PyErr_SetString(PyExc_TypeError, c"hook(event, args)".as_ptr());
            return null_mut();
        }
        let event = *args;
        let event_args = *args.add(1);
        let kind = PyDict_GetItem(item(bound, bound::KINDS), event);
        if kind.is_null() {
            // Not an event the hook watches (an import raises several).
            return none();
        }
        let number = PyLong_AsLong(kind);
        if number == -1 {
            // Not a number this module gave out: the Python hook decides.
            PyErr_Clear();
        }
        let decided = match Kind::from_number(number) {
            Kind::Exec => stock_exec(bound),
            Kind::MarshalLoads => stock_bytecode(bound),
            Kind::Other => false,
        };
        if decided {
            return none();
        }
        // The frame that raised the event, as the Python hook sees it; borrowed, alive for
        // as long as this call (it is running).
        let frame = PyEval_GetFrame();
        if !frame.is_null() && settled(bound, event, frame) {
            return none();
        }
        let call = Owned(PyTuple_New(2));
        let Some(call_args) = call.get() else {
            return null_mut();
        };
        for (at, object) in [(0, event), (1, event_args)] {
            Py_IncRef(object);
            // Steals the reference just taken; the tuple is new, so it cannot fail.
            PyTuple_SetItem(call_args, at, object);
        }
        let answer = Owned(PyObject_Call(
            item(bound, bound::PYTHON_HOOK),
            call_args,
            null_mut(),
        ));
        let Some(answer) = answer.get() else {
            // Refused (or failed): the exception set is the event's answer.
            return null_mut();
        };
        if answer != (&raw const _Py_NoneStruct).cast_mut() {
            settle(bound, event, answer);
        }
        none()
    }
}

struct Methods<const N: usize>([MethodDef; N]);
// SAFETY: read-only after compilation; CPython never writes a PyMethodDef.
unsafe impl<const N: usize> Sync for Methods<N> {}

static HOOK: Methods<1> = Methods([MethodDef {
    name: c"hook".as_ptr(),
    meth: hook as *const c_void,
    flags: METH_FASTCALL,
    doc: c"guard's audit hook: hook(event, args)".as_ptr(),
}]);

/// `hook_for(python_hook, kinds, ...)`: the audit hook bound to what the Python hook module
/// found (the order of [`bound`]).
unsafe extern "C" fn hook_for(_module: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by the interpreter with the GIL held and `args` a tuple (METH_VARARGS).
    unsafe {
        if PyTuple_Size(args) != bound::LEN {
            PyErr_SetString(
                PyExc_TypeError,
                c"hook_for takes the 14 objects guard's hook module passes".as_ptr(),
            );
            return null_mut();
        }
        // The tuple is kept alive by the function object (its bound "self").
        PyCFunction_NewEx(HOOK.0.as_ptr().cast_mut(), args, null_mut())
    }
}

static METHODS: Methods<2> = Methods([
    MethodDef {
        name: c"hook_for".as_ptr(),
        meth: hook_for as *const c_void,
        flags: METH_VARARGS,
        doc: c"hook_for(python_hook, kinds, ...): guard's audit hook".as_ptr(),
    },
    MethodDef {
        name: null(),
        meth: null(),
        flags: 0,
        doc: null(),
    },
]);

static mut MODULE: ModuleDef = ModuleDef {
    base: ModuleDefBase {
        head: ObjectHead {
            refcnt: 1,
            ty: null_mut(),
        },
        init: None,
        index: 0,
        copy: null_mut(),
    },
    name: c"guard_audit_fast".as_ptr(),
    doc: c"The native front of guard's audit hook.".as_ptr(),
    size: -1,
    methods: null_mut(),
    slots: null_mut(),
    traverse: null_mut(),
    clear: null_mut(),
    free: null_mut(),
};

/// The module's entry point, found by its name when the interpreter imports it.
///
/// # Safety
/// Called once by the interpreter's import machinery, with the GIL held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_guard_audit_fast() -> *mut PyObject {
    // SAFETY: the interpreter calls this with the GIL held; the definition is static, as
    // PyModule_Create2 requires, and written only here, before the interpreter reads it.
    unsafe {
        let module = &raw mut MODULE;
        (*module).methods = METHODS.0.as_ptr().cast_mut();
        PyModule_Create2(module, PYTHON_ABI_VERSION)
    }
}
