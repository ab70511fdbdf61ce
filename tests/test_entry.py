"""Entry decoding against the definitions in include/linux/xarray.h."""

from crashext.xarray import entry as E


def test_value_entries():
    # xa_mk_value(v) = (v << 1) | 1
    for v in (0, 1, 0x1a2b, (1 << 62) - 1):
        ent = (v << 1) | 1
        assert E.kind_of(ent) == E.VALUE
        assert E.xa_to_value(ent) == v


def test_internal_entries():
    assert E.kind_of(0) == E.EMPTY
    # xa_mk_sibling(0..62) are siblings; 63 (chunk-1) is not.
    for off in range(63):
        assert E.kind_of(E.xa_mk_sibling(off)) == E.SIBLING
        assert E.xa_to_sibling(E.xa_mk_sibling(off)) == off
    assert E.kind_of(E.xa_mk_internal(63)) == E.BAD_INTERNAL
    assert E.XA_RETRY_ENTRY == 0x402 and E.kind_of(0x402) == E.RETRY
    assert E.XA_ZERO_ENTRY == 0x406 and E.kind_of(0x406) == E.ZERO
    assert E.kind_of(E.xa_mk_internal(258)) == E.BAD_INTERNAL
    # xa_is_node(): internal and > 4096; xa_to_node() = entry - 2
    node = 0xffff888006cbc000
    assert E.kind_of(node | 2) == E.NODE and E.xa_to_node(node | 2) == node
    assert E.kind_of(4098) == E.NODE
    assert E.kind_of(4094) == E.BAD_INTERNAL     # internal 1023, <= 4096


def test_pointers():
    assert E.kind_of(0xffffea0000247800) == E.POINTER
    assert E.is_kernel_pointer(0xffffea0000247800)
    assert not E.is_kernel_pointer(0xe8)
    assert not E.is_kernel_pointer(0xffffea0000247804 + 1)


def test_small_chunk():
    # CONFIG_BASE_SMALL: XA_CHUNK_SIZE 16, siblings 0..14
    assert E.kind_of(E.xa_mk_sibling(14), 16) == E.SIBLING
    assert E.kind_of(E.xa_mk_sibling(15), 16) == E.BAD_INTERNAL
