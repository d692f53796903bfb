"""Is a process that left its pid on disk (a reader's private copy, a worker's heartbeat) alive?"""

import os


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists (also when it belongs to another user)."""
    if pid <= 0:  # 0 and negatives address process groups, not one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
