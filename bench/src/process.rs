//! Stopping child processes: a SIGINT for the tracers that write their results on it (locktrace,
//! bpftrace), and waiting with a deadline, killing what overstays it.

use std::io;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Sends SIGINT to `child`.
pub fn interrupt(child: &Child) {
    // SAFETY: plain kill(2) on our own child's pid, which stays ours until we reap it.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
}

/// Waits for `child` until `deadline`, looking every `poll` (its exit is seen within that); a
/// child still running then is killed and reaped, and `None` returned.
pub fn wait_until(
    child: &mut Child,
    deadline: Instant,
    poll: Duration,
) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_that_exits_in_time_gives_its_status_and_one_that_overstays_is_killed() {
        let mut quick = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = wait_until(&mut quick, deadline, Duration::from_millis(1)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));

        let mut stuck = Command::new("sleep").arg("60").spawn().unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(
            wait_until(&mut stuck, deadline, Duration::from_millis(5)).unwrap(),
            None
        );
        assert!(stuck.try_wait().unwrap().is_some(), "killed and reaped");
    }

    #[test]
    fn interrupt_stops_a_child_with_sigint() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        interrupt(&child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = wait_until(&mut child, deadline, Duration::from_millis(5)).unwrap();
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGINT));
    }
}
