//! Who a lock holder is beyond pid and comm: its command line and container, read from /proc while
//! the process is alive (a holder seen once is asked once), in a bounded cache.

use std::{
    collections::{HashMap, VecDeque},
    rc::Rc,
};

use locktrace_report::{Holder, is_container_id};

/// Processes remembered; past this the longest-known are forgotten first.
const CACHE: usize = 4096;
/// Characters of a command line kept (the rest is cut with `…`), so the cache and the reports
/// stay small whatever a process was started with.
const CMDLINE_CHARS: usize = 1024;

/// What /proc said about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub cmdline: Option<String>,
    pub container: Option<String>,
}

/// Holders by pid, asked again when the comm changes: an exec changes it and a recycled pid
/// usually comes with another one, so neither is served the previous process's command line.
pub struct Processes {
    read: fn(u32) -> Facts,
    known: HashMap<u32, Rc<Holder>>,
    /// Pids in the order they were first asked about.
    order: VecDeque<u32>,
}

impl Default for Processes {
    fn default() -> Self {
        Processes::new(read_proc)
    }
}

impl Processes {
    /// Processes whose facts come from `read` (tests pass their own).
    pub fn new(read: fn(u32) -> Facts) -> Self {
        Processes {
            read,
            known: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn holder(&mut self, pid: u32, comm: &str) -> Rc<Holder> {
        if let Some(h) = self.known.get(&pid)
            && h.comm == comm
        {
            return h.clone();
        }
        let facts = (self.read)(pid);
        let holder = Rc::new(Holder {
            pid,
            comm: comm.to_string(),
            cmdline: facts.cmdline,
            container: facts.container,
        });
        if self.known.insert(pid, holder.clone()).is_none() {
            self.order.push_back(pid);
            if self.order.len() > CACHE
                && let Some(old) = self.order.pop_front()
            {
                self.known.remove(&old);
            }
        }
        holder
    }
}

fn read_proc(pid: u32) -> Facts {
    Facts {
        cmdline: std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|b| cmdline(&b)),
        container: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|c| container_id(&c)),
    }
}

/// `/proc/PID/cmdline` (NUL-separated arguments) as one line of at most [`CMDLINE_CHARS`]
/// characters; `None` when empty (kernel threads, zombies).
pub fn cmdline(raw: &[u8]) -> Option<String> {
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        return None;
    }
    let line = args.join(" ");
    Some(match line.char_indices().nth(CMDLINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    })
}

/// The container ID in a `/proc/PID/cgroup` path: the last run of exactly 64 hex digits, as
/// docker (`docker-ID.scope`, `/docker/ID`), podman (`libpod-ID.scope`), CRI-O (`crio-ID.scope`)
/// and containerd (`cri-containerd-ID.scope`) write it.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split(|c: char| !c.is_ascii_hexdigit()))
        .rfind(|run| is_container_id(run))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2c0e5d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";

    #[test]
    fn cmdline_joins_arguments_and_is_none_when_empty() {
        assert_eq!(
            cmdline(b"podman\0pull\0alpine\0").as_deref(),
            Some("podman pull alpine")
        );
        assert_eq!(cmdline(b""), None);
        let long = format!("podman\0{}", "é".repeat(2 * CMDLINE_CHARS));
        let cut = cmdline(long.as_bytes()).unwrap();
        assert_eq!(cut.chars().count(), CMDLINE_CHARS + 1);
        assert!(cut.starts_with("podman é") && cut.ends_with("é…"), "{cut}");
    }

    #[test]
    fn container_ids_are_found_in_runtime_cgroup_paths() {
        for path in [
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!("0::/system.slice/docker-{ID}.scope"),
            format!("12:memory:/docker/{ID}"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        // 63 or 65 hex digits are not an ID.
        assert_eq!(container_id(&format!("0::/x-{}.scope", &ID[1..])), None);
        assert_eq!(container_id(&format!("0::/x-{ID}a.scope")), None);
    }

    #[test]
    fn a_process_is_asked_once_and_an_exec_is_a_new_holder() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static READS: AtomicUsize = AtomicUsize::new(0);
        let mut p = Processes::new(|pid| {
            READS.fetch_add(1, Ordering::SeqCst);
            Facts {
                cmdline: Some(format!("run {pid}")),
                container: None,
            }
        });
        let a = p.holder(5, "sh");
        let b = p.holder(5, "sh");
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(a.cmdline.as_deref(), Some("run 5"));
        assert_eq!(p.holder(5, "podman").comm, "podman");
        assert_eq!(READS.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut p = Processes::new(|_| Facts::default());
        for pid in 0..CACHE as u32 + 10 {
            p.holder(pid, "x");
        }
        assert_eq!(p.known.len(), CACHE);
        assert_eq!(p.order.len(), CACHE);
    }
}
