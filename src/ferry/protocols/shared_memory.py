"""Triton's system shared memory extension: the registry of client-registered regions.

A client on the same host puts tensors in a POSIX shared memory object (`shm_open`,
under /dev/shm), registers a window of it as a named region, and then names the region
in an inference request instead of sending the bytes; outputs can be written into a
region the same way. This module owns the registered regions and every check on them.

What keeps it safe (issue 11's rules: no network client reads files or exhausts memory):
- Who may use it is the operator's choice (`--allow_client_shm`): `false` (the default,
  as in Triton, with Triton's error), `loopback` (clients connecting from 127.0.0.0/8,
  ::1 or the gRPC UNIX socket) or `true` (any client). Region names are global, so the
  check applies to inference that names a region too, not only to registration.
- A key is a POSIX shm name, `/name` with no other '/' and no '..', opened like
  `shm_open` does (O_NOFOLLOW under /dev/shm): never a path elsewhere. The object must be
  a regular file that holds the whole window.
- Regions are bounded in count (`--max_shm_regions`, each holds one file descriptor)
  and in registered bytes together (`--max_shm_bytes`).
- Every offset and byte size a request gives is checked against its region before any
  byte is read or written (`check`, `read`, `write`), and an output must fit its window;
  regions are read and written with pread/pwrite (see `SharedMemoryRegistry`).

Threading: every method runs on the server's event loop (REST and gRPC share it) and
none awaits, so a region cannot be unregistered between a check and its read or write.
A request resolves its output regions again when it writes them: a region unregistered
while the model ran fails that request with Triton's "Unable to find" error.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

from ferry.codecs.v2_shared_memory import Window
from ferry.errors import AlreadyExists, InternalError, InvalidArgument, NotFound, Unimplemented

SHM_DIR = "/dev/shm"
# Each region keeps a file descriptor: 64 stay inside the descriptors kept out of the
# connection budget (ferry.transport_limits FD_RESERVE_MIN, 128) with ferry's own ~26.
DEFAULT_MAX_REGIONS = 64
DEFAULT_MAX_BYTES = 4 * 1024**3
# Triton reserves keys with this prefix for its Python backend (common.h); it refuses them.
RESERVED_KEY_PREFIX = "triton_python_backend_shm_region_"

# Triton's own texts (src/common.h, src/shared_memory_manager.cc, src/http_server.cc).
CLIENT_SHM_DISABLED = (
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
)
NOT_LOCAL = (
    "Shared memory is only for clients on this host: the server was started with "
    "'--allow_client_shm=loopback' and this client connected from {peer}"
)


class ClientAccess(Enum):
    """`--allow_client_shm`: which clients may register and use regions."""

    NONE = "false"
    LOOPBACK = "loopback"
    ALL = "true"


@dataclass(frozen=True)
class SharedMemoryOptions:
    """The operator's shared memory settings (`ferry serve` flags)."""

    allow_client_shm: ClientAccess = ClientAccess.NONE
    max_regions: int = DEFAULT_MAX_REGIONS
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def enabled(self) -> bool:
        return self.allow_client_shm is not ClientAccess.NONE


@dataclass(frozen=True)
class Client:
    """Where a request came from, as far as shared memory cares: its address (None for
    a UNIX socket) and how to name it in an error."""

    host: str | None
    description: str


def grpc_client(peer: str) -> Client:
    """The client of a grpc.aio call from `context.peer()` ("ipv4:127.0.0.1:5000",
    "ipv6:[::1]:5000" or percent-encoded "ipv6:%5B::1%5D:5000", "unix:/path")."""
    if peer.startswith(("unix:", "unix-abstract:")):
        return Client(None, "a UNIX socket")
    _, _, address = unquote(peer).partition(":")
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    return Client(host or "?", host or peer)


def rest_client(scope_client: tuple[str, int] | None) -> Client:
    """The client of an ASGI request from `scope["client"]` (None: a UNIX socket)."""
    if scope_client is None:
        return Client(None, "a UNIX socket")
    return Client(scope_client[0], scope_client[0])


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return True  # a UNIX socket is on this host by construction
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@dataclass
class _Region:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int

    def status(self) -> dict:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


class SharedMemoryRegistry:
    """The registered system shared memory regions of one server (see the module
    docstring for the guarantees). Event-loop only; not thread-safe.

    A region keeps its object's file descriptor and is read and written with pread and
    pwrite, not through a mapping: a client that shrinks its object after registering
    then gets short reads (an error), where reading a mapping past the end would kill
    the server with SIGBUS."""

    def __init__(self, options: SharedMemoryOptions) -> None:
        self.options = options
        self._regions: dict[str, _Region] = {}
        self._registered_bytes = 0

    # -- who may use it --------------------------------------------------------------------

    def check_client(self, client: Client) -> None:
        """Raise Triton's error when this client may not register or use regions."""
        access = self.options.allow_client_shm
        if access is ClientAccess.NONE:
            raise Unimplemented(CLIENT_SHM_DISABLED)
        if access is ClientAccess.LOOPBACK and not _is_loopback(client.host):
            raise Unimplemented(NOT_LOCAL.format(peer=client.description))

    # -- register / unregister / status --------------------------------------------------

    def register(self, client: Client, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register `byte_size` bytes at `offset` of the shm object `key` as `name`."""
        self.check_client(client)
        if not name:
            raise InvalidArgument(
                "'region name' is necessary to register system shared memory region"
            )
        path = _shm_path(name, key)
        if name in self._regions:
            raise AlreadyExists(f"shared memory region '{name}' already in manager")
        if offset < 0 or byte_size < 0:
            raise InvalidArgument(f"failed to register shared memory region '{name}': invalid args")
        if len(self._regions) >= self.options.max_regions:
            raise InvalidArgument(
                f"failed to register shared memory region '{name}': {len(self._regions)} "
                "regions are registered, the most this server allows (--max_shm_regions)"
            )
        if self._registered_bytes + byte_size > self.options.max_bytes:
            raise InvalidArgument(
                f"failed to register shared memory region '{name}': {byte_size} more bytes "
                f"would make {self._registered_bytes + byte_size} bytes of shared memory "
                f"registered, over the limit of {self.options.max_bytes} (--max_shm_bytes)"
            )
        fd = _open(name, key, path, offset, byte_size)
        self._regions[name] = _Region(name, key, offset, byte_size, fd)
        self._registered_bytes += byte_size

    def unregister(self, client: Client, name: str) -> None:
        """Forget region `name` (empty: every region); an unknown name is no error, as
        in Triton."""
        self.check_client(client)
        for each in [name] if name else list(self._regions):
            region = self._regions.pop(each, None)
            if region is not None:
                self._registered_bytes -= region.byte_size
                os.close(region.fd)

    def close(self) -> None:
        """Close every region's descriptor (server shutdown)."""
        for region in self._regions.values():
            os.close(region.fd)
        self._regions.clear()
        self._registered_bytes = 0

    def status(self, name: str) -> list[dict]:
        """Every region (name empty) or one, in Triton's status shape."""
        if not name:
            return [region.status() for region in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.status()]

    # -- inference -----------------------------------------------------------------------

    def _checked(self, client: Client, window: Window) -> _Region:
        """Region of `window`, with the window checked against it (Triton's
        GetMemoryInfo, in its words)."""
        self.check_client(client)
        name = window.region
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find shared memory region: '{name}'")
        if window.offset < 0 or window.offset >= region.byte_size:
            raise InvalidArgument(f"Invalid offset for shared memory region: '{name}'")
        if window.byte_size < 0 or window.offset + window.byte_size > region.byte_size:
            raise InvalidArgument(f"Invalid offset + byte size for shared memory region: '{name}'")
        return region

    def check(self, client: Client, window: Window) -> None:
        """Refuse a window that its region does not hold (before the model runs)."""
        self._checked(client, window)

    def read(self, client: Client, window: Window) -> bytes:
        """The bytes of `window`, copied out of the region. The caller bounds
        `window.byte_size` (the request's tensor budget) before calling."""
        region = self._checked(client, window)
        data = os.pread(region.fd, window.byte_size, region.offset + window.offset)
        if len(data) != window.byte_size:
            raise InvalidArgument(
                f"Shared memory region '{window.region}' ends before the "
                f"{window.byte_size} bytes at offset {window.offset}: its object "
                f"'{region.key}' was made smaller after it was registered"
            )
        return data

    def write(self, client: Client, window: Window, data: bytes, tensor: str) -> None:
        """Write an output tensor's bytes at the start of `window`; Triton's error when
        the window is too small for them."""
        region = self._checked(client, window)
        if len(data) > window.byte_size:
            raise InternalError(
                f"shared memory size specified with the request for output '{tensor}' "
                f"({window.byte_size} bytes) should be at least {len(data)} bytes to hold "
                "the results"
            )
        os.pwrite(region.fd, data, region.offset + window.offset)


def _shm_path(name: str, key: str) -> str:
    """The /dev/shm path of a POSIX shm name, or InvalidArgument for anything else."""
    bare = key[1:] if key.startswith("/") else key
    if not bare or bare.strip("/") == "":
        raise InvalidArgument(
            f"cannot register shared memory region '{name}' - invalid shm key '{key}'"
        )
    if "/" in bare or bare in (".", "..") or "\0" in bare or len(bare) > 255:
        raise InvalidArgument(
            f"cannot register shared memory region '{name}' - invalid shm key '{key}': a key "
            "is a POSIX shared memory name ('/name', no other '/'), not a path"
        )
    if bare.startswith(RESERVED_KEY_PREFIX):
        raise InvalidArgument(
            f"cannot register shared memory region '{name}' with key '{key}' as the key "
            f"contains the reserved prefix '{RESERVED_KEY_PREFIX}'"
        )
    return os.path.join(SHM_DIR, bare)


def _open(name: str, key: str, path: str, offset: int, byte_size: int) -> int:
    """Open the object as shm_open(O_RDWR) does (never following a link) and check that
    it is a regular file holding the window; returns its descriptor."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError:
        raise InternalError(f"Unable to open shared memory region: '{key}'") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InternalError(f"Invalid shared memory region: '{key}'")
        if offset + byte_size > info.st_size:
            raise InvalidArgument(f"failed to register shared memory region '{name}': invalid args")
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class ClientRegions:
    """The registry as one client may use it (`ferry.codecs.v2_shared_memory.RegionAccess`):
    every call checks the client first, so a request naming no region costs nothing."""

    registry: SharedMemoryRegistry
    client: Client

    def check(self, window: Window) -> None:
        self.registry.check(self.client, window)

    def read(self, window: Window) -> bytes:
        return self.registry.read(self.client, window)

    def write(self, window: Window, data: bytes, tensor: str) -> None:
        self.registry.write(self.client, window, data, tensor)
