"""Conditions on a watch's value (perfbp.kernel.condition): reading them, and
the program that tests them, run in a small eBPF interpreter.

The interpreter (:class:`VM`) follows the eBPF instruction set's own rules
(Documentation/bpf/standardization/instruction-set.rst): immediates
sign-extended to 64 bits by ALU64 and JMP, 32-bit ALU zero-extending, loads
zero-extending, unsigned and signed jumps.  It knows only what a
perf-event program may touch: its context, the stack, the map value of a
``BPF_PSEUDO_MAP_VALUE`` load, and the probe-read helpers.  So a property
test can run the compiled program on any values and compare its answer
with two others: :meth:`Condition.evaluate` and Python itself (the grammar
is a subset of Python's expressions, with Python's precedence, so ``eval``
of the same text is an independent oracle).

The real kernel's verifier and hits are in tests/test_values.py.
"""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfbp.errors import InvalidBreakpoint, InvalidCondition
from perfbp.kernel import _uapi as U
from perfbp.kernel.bpf import Insn, encode, decode
from perfbp.kernel.condition import TALLY, Tally, hit_program, parse

ADDR_OFFSET = 176  # offsetof(struct bpf_perf_event_data, addr) on x86-64
MAP_FD = 7
U64 = (1 << 64) - 1
EFAULT = 14


# --- the interpreter ----------------------------------------------------------------------

class VM:
    """Run a perf-event program on one hit.

    Memory is a few regions at made-up addresses: the stack (512 bytes, r10
    at its top), the context (``struct bpf_perf_event_data``: only ``addr``
    matters), the map's value, and the user memory the watch reads.
    """

    STACK, CTX, MAP, USER = 0x1000_0000, 0x2000_0000, 0x3000_0000, 0x7f00_0000_0000

    def __init__(self, insns: "list[Insn]", tally: Tally, user: "dict[int, bytes]",
                 watch: int) -> None:
        self.insns = insns
        ctx = bytearray(ADDR_OFFSET + 8)
        struct.pack_into("<Q", ctx, ADDR_OFFSET, watch)
        self.mem = {self.STACK: bytearray(512), self.CTX: ctx,
                    self.MAP: bytearray(tally.pack())}
        for addr, data in user.items():
            self.mem[addr] = bytearray(data)
        self.user = set(user)
        self.calls: "list[int]" = []

    def tally(self) -> Tally:
        return Tally.unpack(bytes(self.mem[self.MAP]))

    def region(self, addr: int, size: int, user: bool = False):
        for base, buf in self.mem.items():
            if base <= addr and addr + size <= base + len(buf) and (base in self.user) == user:
                return buf, addr - base
        return None, 0

    def load(self, addr: int, size: int) -> int:
        buf, at = self.region(addr, size)
        assert buf is not None, f"load of {size} bytes at {addr:#x}: outside the program's memory"
        return int.from_bytes(buf[at:at + size], "little")

    def store(self, addr: int, size: int, value: int) -> None:
        buf, at = self.region(addr, size)
        assert buf is not None and at is not None, f"store at {addr:#x}: outside"
        assert not (self.CTX <= addr < self.CTX + 4096), "a perf-event context is read-only"
        buf[at:at + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def call(self, func: int, r: "list[int]") -> int:
        self.calls.append(func)
        assert func in (U.BPF_FUNC_probe_read_user, U.BPF_FUNC_probe_read_kernel), func
        dst, size, src = r[1], r[2], r[3]
        data, at = self.region(src, size, user=True)
        buf, dat = self.region(dst, size)
        assert buf is not None, "probe_read into memory that is not the program's"
        if data is None:  # the kernel zeroes the destination on a fault
            buf[dat:dat + size] = bytes(size)
            return -EFAULT & U64
        buf[dat:dat + size] = data[at:at + size]
        return 0

    def run(self, limit: int = 10_000) -> int:
        r = [0] * 11
        r[1], r[10] = self.CTX, self.STACK + 512
        pc = 0
        for _ in range(limit):
            i = self.insns[pc]
            cls, code = i.code & 7, i.code
            pc += 1
            if cls in (U.BPF_ALU64, U.BPF_ALU):
                bits = 64 if cls == U.BPF_ALU64 else 32
                mask = (1 << bits) - 1
                src = r[i.src_reg] if code & U.BPF_X else i.imm & U64  # sign-extended
                a, b, op = r[i.dst_reg] & mask, src & mask, code & 0xf0
                assert i.dst_reg != 10, "r10 is read-only"
                if op == U.BPF_MOV:
                    out = b
                elif op == U.BPF_ADD:
                    out = a + b
                elif op == U.BPF_SUB:
                    out = a - b
                elif op == U.BPF_AND:
                    out = a & b
                elif op == U.BPF_OR:
                    out = a | b
                elif op == U.BPF_XOR:
                    out = a ^ b
                else:
                    raise AssertionError(f"ALU op {op:#x} not in the subset")
                r[i.dst_reg] = out & mask
            elif cls == U.BPF_LD:
                assert code == U.BPF_LD | U.BPF_DW | U.BPF_IMM, f"{code:#x}"
                high = self.insns[pc]
                assert high.code == 0 and high.dst_reg == high.src_reg == high.off == 0
                pc += 1
                if i.src_reg == U.BPF_PSEUDO_MAP_VALUE:
                    assert i.imm == MAP_FD and 0 <= high.imm < TALLY.size
                    r[i.dst_reg] = self.MAP + high.imm
                else:
                    assert i.src_reg == 0
                    r[i.dst_reg] = (high.imm & 0xffffffff) << 32 | (i.imm & 0xffffffff)
            elif cls in (U.BPF_LDX, U.BPF_STX, U.BPF_ST):
                size = {U.BPF_B: 1, U.BPF_H: 2, U.BPF_W: 4, U.BPF_DW: 8}[code & 0x18]
                mode = code & 0xe0
                if cls == U.BPF_LDX:
                    assert mode == U.BPF_MEM
                    r[i.dst_reg] = self.load(r[i.src_reg] + i.off, size)
                elif mode == U.BPF_ATOMIC:
                    assert cls == U.BPF_STX and i.imm == U.BPF_ADD and size in (4, 8)
                    addr = r[i.dst_reg] + i.off
                    self.store(addr, size, self.load(addr, size) + r[i.src_reg])
                else:
                    assert mode == U.BPF_MEM
                    value = r[i.src_reg] if cls == U.BPF_STX else i.imm & U64
                    self.store(r[i.dst_reg] + i.off, size, value)
            elif cls in (U.BPF_JMP, U.BPF_JMP32):
                op = code & 0xf0
                if op == U.BPF_EXIT:
                    return r[0]
                if op == U.BPF_CALL:
                    r[0] = self.call(i.imm, r)
                    r[1:6] = [0xdead_beef_0000 + n for n in range(1, 6)]  # clobbered
                    continue
                if op == U.BPF_JA:
                    pc += i.off
                    continue
                bits = 64 if cls == U.BPF_JMP else 32
                mask = (1 << bits) - 1
                a = r[i.dst_reg] & mask
                b = (r[i.src_reg] if code & U.BPF_X else i.imm & U64) & mask
                sa, sb = (a - (1 << bits) if a >> (bits - 1) else a,
                          b - (1 << bits) if b >> (bits - 1) else b)
                taken = {U.BPF_JEQ: a == b, U.BPF_JNE: a != b, U.BPF_JGT: a > b,
                         U.BPF_JGE: a >= b, U.BPF_JLT: a < b, U.BPF_JLE: a <= b,
                         U.BPF_JSET: bool(a & b), U.BPF_JSGT: sa > sb, U.BPF_JSGE: sa >= sb,
                         U.BPF_JSLT: sa < sb, U.BPF_JSLE: sa <= sb}[op]
                if taken:
                    pc += i.off
            else:
                raise AssertionError(f"instruction class {cls} not in the subset")
        raise AssertionError("the program did not exit")


WATCH = VM.USER + 0x40


def run_hit(condition, length: int, new: int, tally: Tally, *, emit: bool = True,
            readable: bool = True) -> "tuple[int, Tally, VM]":
    """One hit of the program: (its return value, the tally after, the VM)."""
    insns = decode(encode(hit_program(condition, MAP_FD, length, emit=emit,
                                      addr_offset=ADDR_OFFSET)))
    user = {WATCH: new.to_bytes(length, "little") + b"\xa5" * 8} if readable else {}
    vm = VM(insns, tally, user, WATCH)
    ret = vm.run()
    return ret, vm.tally(), vm


# --- reading ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message, column", [
    ("new == = 0", "`=` is not a comparison: write ==", 7),
    ("new = 0", "`=` is not a comparison: write ==", 4),
    ("", "the condition is empty", 0),
    ("new ==", "the condition ends too early: expected new, old, a number or (", 6),
    ("(new == 1", "expected ) to close the ( at column 1", 9),
    ("new == 1)", "a ) without its (", 8),
    ("1 < new < 5", "comparisons do not chain: write '... < new and new < ...'", 8),
    ("(new == 1) == 1", "== compares numbers, and 'new == 1' is true or false", 11),
    ("new & (old == 1)", "& masks numbers, and 'old == 1' is true or false", 4),
    ("not new & old > 1 & (old or new)", "& masks numbers, and 'old or new' is true or false",
     18),
    ("x == 1", "unknown name 'x': a condition knows new, old, and, or, not", 0),
    ("NEW == 1", "unknown name 'NEW'", 0),
    ("new == -1", "values are unsigned: there are no negative numbers", 7),
    ("new == 010", "010 starts with 0, which C would read as octal: write 10 for decimal, or "
                   "0x8 for octal 010", 7),
    ("new == 09", "09 starts with 0, which C would read as octal: write 9 for decimal", 7),
    ("new == 0x1g", "'0x1g' is not a number (decimal, or hexadecimal 0x...)", 7),
    ("new == 1_000", "'1_000' is not a number", 7),
    ("new && old", "write `and` (&& is C's spelling)", 4),
    ("new || old", "write `or` (|| is C's spelling)", 4),
    ("new | old", "write `or` (there is no bitwise or)", 4),
    ("new ! = 1", "write `not`, or != for unequal", 4),
    ("new + 1 > old", "there is no arithmetic", 4),
    ("new 5", "expected and, or, or an operator before '5'", 4),
    ("new == 0x10000000000000000", "0x10000000000000000 does not fit in 64 bits", 7),
    ("new == 1 and", "the condition ends too early", 12),
    ("not", "the condition ends too early", 3),
    ("()", "expected new, old, a number or (, not ')'", 1),
])
def test_a_broken_condition_is_one_line_with_its_column(text, message, column):
    with pytest.raises(InvalidCondition) as info:
        parse(text)
    err = info.value
    assert message in str(err)
    assert "\n" not in str(err)
    assert err.column == column and err.text == text
    assert str(err).endswith(f"(column {column + 1})") or not text.strip()
    assert err.caret() == f"  {text}\n  {' ' * column}^"
    assert isinstance(err, InvalidBreakpoint) and err.errno == 22  # EINVAL: bad input


def test_the_error_survives_pickling():
    import pickle

    with pytest.raises(InvalidCondition) as info:
        parse("new === 1")
    back = pickle.loads(pickle.dumps(info.value))
    assert (type(back), str(back), back.column, back.text, back.errno) == (
        InvalidCondition, str(info.value), 6, "new === 1", 22)
    assert back.caret() == info.value.caret()


def test_a_long_condition_is_cut_in_the_message_but_not_in_the_caret():
    text = "new == 1 or " * 10 + "new == 2 ="
    with pytest.raises(InvalidCondition) as info:
        parse(text)
    assert "..." in str(info.value) and len(str(info.value)) < 160
    assert info.value.caret().splitlines()[0] == "  " + text


@pytest.mark.parametrize("text, length, column, top", [
    ("new == 256", 1, 7, "0xff"),
    ("old < 0x10000", 2, 6, "0xffff"),
    ("new & 0x100000000", 4, 6, "0xffffffff"),
])
def test_a_number_must_fit_the_watch(text, length, column, top):
    cond = parse(text)
    with pytest.raises(InvalidCondition) as info:
        cond.check(length)
    assert f"does not fit in new and old, which are {length} byte" in str(info.value)
    assert f"(0 to {top})" in str(info.value) and info.value.column == column
    cond.check(length * 2)  # fits the next size up
    with pytest.raises(InvalidCondition):
        hit_program(cond, MAP_FD, length, emit=True, addr_offset=ADDR_OFFSET)


def test_precedence_is_pythons():
    # & binds tighter than a comparison, comparisons than not, not than and, and than or
    assert parse("new & 1 == 0").evaluate(2, 0)
    assert not parse("new & 1 == 0").evaluate(3, 0)
    assert parse("not new == 1 and old == 1").evaluate(2, 1)
    assert parse("new == 1 or new == 2 and old == 9").evaluate(1, 0)
    assert not parse("(new == 1 or new == 2) and old == 9").evaluate(1, 0)
    assert parse("new & 0x80000000").evaluate(0x80000001, 0)
    assert not parse("new & 0x80000000").evaluate(0x7fffffff, 0)
    assert parse("0X1F == new").evaluate(31, 0)


def test_uses_old():
    assert parse("old != 0 and new == 0").uses_old
    assert not parse("new == 0").uses_old


# --- the program ------------------------------------------------------------------------

def test_the_program_reads_the_watch_with_the_user_helper_and_counts():
    cond = parse("new == 5")
    ret, after, vm = run_hit(cond, 8, 5, Tally(10, 3, 4, 1))
    assert ret == 1 and after == Tally(11, 4, 5, 1)
    assert vm.calls == [U.BPF_FUNC_probe_read_user]
    ret, after, _vm = run_hit(cond, 8, 6, after)
    assert ret == 0 and after == Tally(12, 4, 6, 1)


def test_counting_never_emits_a_sample():
    ret, after, _vm = run_hit(parse("new == 5"), 8, 5, Tally(0, 0, 0, 0), emit=False)
    assert ret == 0 and after == Tally(1, 1, 5, 0)


def test_without_a_condition_every_hit_matches():
    ret, after, _vm = run_hit(None, 4, 0xdeadbeef, Tally(0, 0, 7, 0))
    assert ret == 1 and after == Tally(1, 1, 0xdeadbeef, 0)


def test_bytes_it_cannot_read_are_a_fault_and_never_match():
    ret, after, _vm = run_hit(parse("new == 0"), 8, 0, Tally(5, 2, 9, 0), readable=False)
    assert ret == 0 and after == Tally(6, 2, 9, 1)  # last is kept


def test_a_kernel_watch_reads_with_the_kernel_helper():
    insns = hit_program(parse("new == 1"), MAP_FD, 8, emit=True, addr_offset=ADDR_OFFSET,
                        kernel=True)
    calls = [i.imm for i in insns if i.code == U.BPF_JMP | U.BPF_CALL]
    assert calls == [U.BPF_FUNC_probe_read_kernel]


def test_only_the_watched_length_is_read():
    # the bytes after the value (0xa5...) must not leak into new
    for length in (1, 2, 4, 8):
        ret, after, _vm = run_hit(parse("new == 1"), length, 1, Tally(0, 0, 0, 0))
        assert (ret, after.last) == (1, 1)


def test_a_constant_condition_compiles_to_no_test():
    # the verifier refuses unreachable instructions: none are left
    always = hit_program(parse("1 or new == 3"), MAP_FD, 8, emit=True, addr_offset=ADDR_OFFSET)
    never = hit_program(parse("new & 0 or 2 < 1"), MAP_FD, 8, emit=True,
                        addr_offset=ADDR_OFFSET)
    jumps = lambda p: [i for i in p if i.code & 7 == U.BPF_JMP and i.code & 0xf0 not in  # noqa: E731
                       (U.BPF_CALL, U.BPF_EXIT)]
    assert len(jumps(always)) == len(jumps(never)) == 1  # only the fault test
    assert run_hit(parse("1 or new == 3"), 8, 9, Tally(0, 0, 0, 0))[0] == 1
    assert run_hit(parse("new & 0 or 2 < 1"), 8, 9, Tally(0, 0, 0, 0))[0] == 0


def test_wide_numbers_go_through_a_register():
    # 0x80000000 does not fit a sign-extended immediate: an imm would mean
    # 0xffffffff80000000 in a 64-bit compare
    for text, new, want in [("new == 0x80000000", 0x80000000, 1),
                            ("new == 0x80000000", 0xffffffff80000000, 0),
                            ("new & 0xffffffff00000000", 1 << 40, 1),
                            ("new & 0xffffffff00000000", 0xffffffff, 0),
                            ("new > 0xfffffffffffffffe", U64, 1)]:
        assert run_hit(parse(text), 8, new, Tally(0, 0, 0, 0))[0] == want, (text, new)


# --- properties: the program, Condition.evaluate and Python agree --------------------------

def literals(length: int, near: "st.SearchStrategy[int] | None" = None):
    """Numbers that fit ``length`` bytes, as decimal or hex text, biased to
    the edges of the immediates (a sign-extended s32) and of the length."""
    top = (1 << 8 * length) - 1
    edge = st.sampled_from(sorted({0, 1, top, top - 1, min(top, (1 << 31) - 1),
                                   min(top, 1 << 31), min(top, (1 << 32) - 1)}))
    value = st.one_of(edge, st.integers(0, top)) if near is None else near
    return st.tuples(value, st.booleans()).map(lambda p: hex(p[0]) if p[1] else str(p[0]))


def numbers(length: int):
    atom = st.one_of(st.sampled_from(["new", "old"]), literals(length))
    return st.recursive(atom, lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(" & ".join),
        inner.map(lambda x: f"({x})")), max_leaves=4)


def truths(length: int):
    num = numbers(length)
    compare = st.tuples(num, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), num).map(
        " ".join)
    paren = lambda x: st.sampled_from([x, f"({x})"])  # noqa: E731
    return st.recursive(st.one_of(compare, compare, num), lambda inner: st.one_of(
        inner.map(lambda x: f"not {x}"),
        st.tuples(inner.flatmap(paren), st.sampled_from(["and", "or"]),
                  inner.flatmap(paren)).map(" ".join)), max_leaves=5)


@st.composite
def cases(draw):
    length = draw(st.sampled_from([1, 2, 4, 8]))
    top = (1 << 8 * length) - 1
    text = draw(truths(length))
    # values at, around and away from the numbers the condition names
    named = [int(n, 0) for n in re.findall(r"\b(?:0x[0-9a-f]+|[0-9]+)\b", text)] or [0]
    near = st.sampled_from(named).flatmap(
        lambda n: st.sampled_from([n, n - 1, n + 1, n ^ 1, n >> 1]))
    values = st.one_of(near, st.sampled_from([0, 1, top, 1 << 31, 5]), st.integers(0, top))
    return length, text, draw(values) & top, draw(values) & top


def python(text: str, new: int, old: int) -> bool:
    return bool(eval(text, {"__builtins__": {}}, {"new": new, "old": old}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.booleans())
def test_the_program_python_and_evaluate_agree(case, emit):
    length, text, new, old = case
    cond = parse(text)
    want = python(text, new, old)
    assert cond.evaluate(new, old) == want
    ret, after, _vm = run_hit(cond, length, new, Tally(100, 40, old, 2), emit=emit)
    assert ret == (1 if want and emit else 0)
    assert after == Tally(101, 40 + want, new, 2)


@st.composite
def comparisons(draw):
    """One comparison of new or old with a number or the other, either side
    first: every operator, every length, values at and around the number."""
    length = draw(st.sampled_from([1, 2, 4, 8]))
    top = (1 << 8 * length) - 1
    number = draw(st.one_of(st.sampled_from(sorted({0, 1, top, min(top, (1 << 31) - 1),
                                                     min(top, 1 << 31)})),
                            st.integers(0, top)))
    other = draw(st.sampled_from(["old", draw(literals(length, st.just(number)))]))
    if draw(st.booleans()):
        other = f"{other} & {draw(literals(length))}"
    left, right = draw(st.permutations(["new", other]))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    near = st.sampled_from([number, number - 1, number + 1]).map(lambda v: v & top)
    new, old = draw(st.one_of(near, st.integers(0, top))), draw(st.one_of(near,
                                                                         st.integers(0, top)))
    return length, f"{left} {op} {right}", new, old


@settings(max_examples=600, deadline=None)
@given(comparisons())
def test_every_comparison_either_way_round(case):
    length, text, new, old = case
    want = python(text, new, old)
    assert run_hit(parse(text), length, new, Tally(0, 0, old, 0))[0] == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=30))
def test_old_is_the_value_of_the_hit_before(writes):
    cond = parse("old != 0 and new == 0")
    tally = Tally(0, 0, 0, 0)
    prev, want = 0, 0
    for value in writes:
        _ret, tally, _vm = run_hit(cond, 1, value, tally)
        want += prev != 0 and value == 0
        prev = value
    assert tally == Tally(len(writes), want, writes[-1], 0)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="newold andortx0123456789()&=!<>| -", max_size=30))
def test_any_text_is_a_condition_or_one_line_error(text):
    try:
        cond = parse(text)
    except InvalidCondition as err:
        assert "\n" not in str(err) and 0 <= err.column <= len(text)
        return
    for length in (1, 8):
        try:
            hit_program(cond, MAP_FD, length, emit=True, addr_offset=ADDR_OFFSET)
        except InvalidCondition as err:
            assert "does not fit" in str(err)
