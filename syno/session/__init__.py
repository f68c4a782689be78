"""syno.session: the on-disk format of a search session, written and read in one place.

A session directory holds ``session.json`` (the search options), ``state.json`` / ``inflight.json``
(the search's checkpoint) and one directory per evaluated kernel, ``<metric5>_<hash>`` or
``ERROR_<hash>``, with ``meta.json`` (:class:`KernelMeta`), ``operator.json`` and auxiliary files.

* :mod:`.status`: the status values and which of them count as a successful evaluation;
* :mod:`.naming`: kernel-directory names for accuracy and loss targets;
* :mod:`.schema`: ``meta.json`` as pydantic models (schema version, optional extension blocks);
* :mod:`.files`: atomic JSON writes and atomic kernel directories;
* :mod:`.reader`: a tolerant reader: a damaged file becomes a ``problem`` string, never an exception.
"""

from .files import SessionError, jsonable, read_json, write_json_atomic, write_kernel_dir_atomic
from .naming import KERNEL_DIR_RE, Target, is_kernel_dir_name, kernel_dir_name, parse_kernel_dir_name
from .reader import KernelDir, read_kernel_dir, read_session_info, scan_kernel_dirs, session_target
from .schema import META_SCHEMA_VERSION, KernelMeta, LatencyRecord, Rung
from .status import OK_STATUSES, STATUSES, is_ok, register_status

__all__ = ["SessionError", "jsonable", "read_json", "write_json_atomic", "write_kernel_dir_atomic", "KERNEL_DIR_RE",
           "Target", "is_kernel_dir_name", "kernel_dir_name", "parse_kernel_dir_name", "KernelDir", "read_kernel_dir",
           "read_session_info", "scan_kernel_dirs", "session_target", "META_SCHEMA_VERSION", "KernelMeta",
           "LatencyRecord", "Rung", "OK_STATUSES", "STATUSES", "is_ok", "register_status",
           "SESSION_FILE", "STATE_FILE", "INFLIGHT_FILE", "META_FILE"]

SESSION_FILE = "session.json"
STATE_FILE = "state.json"
INFLIGHT_FILE = "inflight.json"
META_FILE = "meta.json"
