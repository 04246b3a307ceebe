"""The block pool's bookkeeping and the paged cache's writes and gathers."""

import torch

from scratchlm.infer.kv_cache import TRASH_BLOCK, BlockPool, PagedKVCache, block_hash


def test_blocks_are_lent_and_returned_and_the_trash_block_never_is():
    pool = BlockPool(5)
    blocks = [pool.allocate() for _ in range(4)]
    assert TRASH_BLOCK not in blocks and sorted(blocks) == [1, 2, 3, 4]
    assert pool.in_use == 4 and pool.available == 0
    pool.release(blocks)
    assert pool.in_use == 0 and pool.available == 4


def test_a_shared_block_is_freed_when_its_last_holder_lets_go():
    pool = BlockPool(3)
    block = pool.allocate()
    pool.register(block, b"h")
    pool.acquire(block)
    pool.release([block])
    assert pool.in_use == 1 and pool.cached(b"h") == block
    pool.release([block])
    assert pool.in_use == 0 and pool.cached(b"h") == block  # still findable, now evictable
    pool.acquire(pool.cached(b"h"))  # revived by a later prompt
    assert pool.in_use == 1 and not pool.evictable


def test_eviction_takes_free_blocks_first_then_the_least_recently_freed_cached_one():
    pool = BlockPool(6)
    first, second = [pool.allocate() for _ in range(2)], [pool.allocate() for _ in range(2)]
    partial = pool.allocate()  # never full, never cached
    for i, block in enumerate(first + second):
        pool.register(block, bytes([i]))
    pool.release(first)  # walked from the end: first[1] is freed before first[0]
    pool.release(second + [partial])
    assert pool.available == 5 and pool.in_use == 0
    taken = [pool.allocate() for _ in range(4)]
    assert taken == [partial, first[1], first[0], second[1]]
    assert [pool.cached(bytes([i])) for i in range(4)] == [None, None, second[0], None]


def test_one_hash_names_one_block():
    pool = BlockPool(4)
    a, b = pool.allocate(), pool.allocate()
    pool.register(a, b"same")
    pool.register(b, b"same")  # computed twice at once: the first stays the one found
    assert pool.cached(b"same") == a
    pool.release([b])
    assert pool.available == 2 and not pool.evictable


def test_block_hashes_chain_the_whole_prefix():
    first = block_hash(b"", [1, 2, 3, 4])
    assert block_hash(first, [5, 6, 7, 8]) != block_hash(block_hash(b"", [9, 2, 3, 4]), [5, 6, 7, 8])
    assert block_hash(first, [5, 6, 7, 8]) == block_hash(block_hash(b"", [1, 2, 3, 4]), [5, 6, 7, 8])


def test_update_writes_each_token_to_its_slot_and_gathers_each_rows_keys():
    cache = PagedKVCache(n_layers=2, n_kv_heads=2, head_dim=3, num_blocks=4, block_size=2, dtype=torch.float32,
                         device=torch.device("cpu"))
    # Row 0 holds positions 0..2 in blocks [3, 1]; row 1 holds position 0 in block [2], padded with trash.
    k = torch.randn(2, 2, 1, 3)  # one new token per row: row 0 at position 2, row 1 at position 0
    v = torch.randn(2, 2, 1, 3)
    cache.k[1, :, 6:8] = torch.randn(2, 2, 3)  # row 0's positions 0 and 1 (block 3), written earlier
    cache.set_step(torch.tensor([2, 4]), torch.tensor([[6, 7, 2], [4, 0, 0]]))
    keys, values = cache.update(1, 0, k, v)
    assert keys.shape == (2, 2, 3, 3)
    torch.testing.assert_close(keys[0, :, :2], cache.k[1, :, 6:8])
    torch.testing.assert_close(keys[0, :, 2], k[0, :, 0])
    torch.testing.assert_close(keys[1, :, 0], k[1, :, 0])
    torch.testing.assert_close(values[1, :, 0], v[1, :, 0])
    assert cache.k[0].abs().sum() == 0  # other layers untouched
