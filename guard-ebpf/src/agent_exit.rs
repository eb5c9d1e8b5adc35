//! `tp_btf/sched_process_exit`: notices the agent's death.
//!
//! The tracepoint fires in the exiting thread before its descriptors are closed, so the
//! agent's main thread is seen going before its fanotify group is released (and with it
//! every pending permission event allowed). From then on `file_open` refuses what only the
//! agent could have allowed. A restarted agent sets `alive` again once it answers.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Worker threads come and go; the process ends when its main thread does.
    if pid != tgid {
        return 0;
    }
    // Its pid may be recycled: protect no stranger.
    crate::self_protect::protected_exited(tgid);
    crate::maps::agent_exited(tgid);
    0
}
