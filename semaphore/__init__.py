"""Per-business download slots in Redis: leases over a SET, a FIFO queue, Lua for atomicity."""

from semaphore.slots import SlotResult, Slots

__all__ = ["SlotResult", "Slots"]
