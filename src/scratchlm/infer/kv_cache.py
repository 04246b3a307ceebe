"""The paged KV cache: one preallocated pool of fixed-size blocks, lent to sequences as they grow.

    pool   k, v: (n_layers, n_kv_heads, num_blocks * block_size, head_dim), one row per token slot
    table  each sequence's list of block ids; token at position p lives in slot
           table[p // block_size] * block_size + p % block_size

Memory follows the tokens in use, not sequences x context: a sequence holds ceil(tokens / block_size)
blocks, and a finished one gives them back at once. Block 0 is never lent: padded rows of a batch
write their keys there, and padded key positions read from there (the mask hides them).

Prefix caching: a full block is named by a hash of its tokens and of every token before it (the
hash of the previous block chains in), so two sequences that start with the same tokens name their
first blocks alike. BlockPool keeps hash -> block for full blocks; a new sequence takes the blocks of
its longest cached prefix (a reference count says how many sequences hold a block) and prefills
only the rest. A block whose count drops to zero keeps its keys and stays findable, in least
recently freed order, until a new allocation needs it (eviction).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque

import torch

TRASH_BLOCK = 0  # written by padding, read by masked key positions; never lent


def block_hash(parent: bytes, tokens: list[int]) -> bytes:
    """The name of a full block: its tokens and (through parent, the previous block's name) all before.

    A cryptographic hash, not Python's hash(): two prefixes that collided would serve one prompt the
    keys of another, silently.
    """
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockPool:
    """Bookkeeping of the blocks (which are free, who holds what, which prefixes are cached); no tensors."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.refs = [0] * num_blocks
        self.free: deque[int] = deque(range(1, num_blocks))  # never cached, or evicted
        self.evictable: OrderedDict[int, None] = OrderedDict()  # held by nobody, still cached; oldest first
        self.by_hash: dict[bytes, int] = {}
        self.hash_of: dict[int, bytes] = {}

    @property
    def usable(self) -> int:
        """Blocks that sequences can hold (all but the trash block)."""
        return self.num_blocks - 1

    @property
    def available(self) -> int:
        """Blocks an allocation can take now: free ones and cached ones nobody holds."""
        return len(self.free) + len(self.evictable)

    @property
    def in_use(self) -> int:
        return self.usable - self.available

    def allocate(self) -> int:
        """A block for one holder; evicts the least recently freed cached block when none is free."""
        if self.free:
            block = self.free.popleft()
        else:
            block, _ = self.evictable.popitem(last=False)
            del self.by_hash[self.hash_of.pop(block)]
        self.refs[block] = 1
        return block

    def cached(self, h: bytes) -> int | None:
        return self.by_hash.get(h)

    def acquire(self, block: int) -> None:
        """One more holder of a cached block."""
        if self.refs[block] == 0:
            del self.evictable[block]
        self.refs[block] += 1

    def release(self, blocks: list[int]) -> None:
        """The holder of these blocks (a sequence's table, in order) gives them back. The table is walked
        from its end, so a sequence's last blocks are evicted before its first: the start of a prompt is
        the part other prompts are likeliest to share."""
        for block in reversed(blocks):
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if block in self.hash_of:
                    self.evictable[block] = None
                else:
                    self.free.append(block)

    def register(self, block: int, h: bytes) -> None:
        """Make a full block findable by its hash, unless another block with the same tokens already is."""
        if h not in self.by_hash and block not in self.hash_of:
            self.by_hash[h] = block
            self.hash_of[block] = h


class PagedKVCache:
    """The block pool's tensors, and the `update` that every attention layer calls (scratchlm.model).

    Before each forward the engine says which slot each new token writes (`write_slots`) and which
    slots make up each row's keys (`read_slots`, one row per sequence, padded with trash slots).
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.block_size = block_size
        shape = (n_layers, n_kv_heads, num_blocks * block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.write_slots = torch.zeros(0, dtype=torch.long, device=device)
        self.read_slots = torch.zeros(0, dtype=torch.long, device=device)
        self.keys = 0  # keys per row

    def set_step(self, write_slots: torch.Tensor, read_slots: torch.Tensor) -> None:
        """write_slots: (batch * seq,) one slot per new token, row by row; read_slots: (batch, keys)."""
        self.write_slots, self.read_slots, self.keys = write_slots, read_slots.reshape(-1), read_slots.shape[1]

    def update(self, layer_id: int, start_pos: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (batch, n_kv_heads, seq, head_dim) of the new tokens -> every row's keys and values,
        (batch, n_kv_heads, keys, head_dim). start_pos is unused: the slots say where each token goes."""
        batch, heads, seq, dim = k.shape
        out = []
        for pool, new in ((self.k[layer_id], k), (self.v[layer_id], v)):
            pool.index_copy_(1, self.write_slots, new.transpose(0, 1).reshape(heads, batch * seq, dim))
            # Gathered as (heads, batch * keys, dim): each (row, head) reads its keys from one contiguous run.
            out.append(pool.index_select(1, self.read_slots).view(heads, batch, self.keys, dim).transpose(0, 1))
        return out[0], out[1]
