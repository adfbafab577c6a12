"""Peak resident memory of this process, for benchmarks that run each fit in a child.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is not this process's own peak when it
was started by ``subprocess`` (vfork + exec on Linux): the kernel carries the parent's
high-water mark over the exec, so a child of a parent that once held 2 GB reports at
least 2 GB whatever it does itself. ``VmHWM`` in ``/proc/self/status`` belongs to the
process's own address space; it is used where it exists.
"""

import resource


def memory_status():
    """``VmHWM`` (peak), ``VmRSS``, ``RssAnon`` and ``RssFile`` of this process in MB
    (Linux; an empty dict elsewhere)."""
    status = {}
    try:
        with open("/proc/self/status") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    status[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return status


def peak_rss_mb():
    """This process's own peak resident memory in MB (see the module docstring)."""
    peak = memory_status().get("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak
