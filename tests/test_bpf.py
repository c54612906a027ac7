"""The eBPF instruction builder (perfbp.kernel.bpf), byte for byte.

Every expected encoding below is worked out by hand from the instruction
format (``struct bpf_insn``: u8 code, u8 dst_reg:4 | src_reg:4 << 4, s16 off,
s32 imm, little-endian) and the opcodes of include/uapi/linux/bpf.h, not
produced by the code under test; the comment on each line is the
instruction as the kernel's verifier log prints it.  The first program is
the kernel's own samples/bpf/sock_example.c, without its packet load.
"""

from __future__ import annotations

import pytest

from perfbp.kernel._uapi import (
    BPF_ADD, BPF_AND, BPF_B, BPF_DW, BPF_FETCH, BPF_FUNC_map_lookup_elem,
    BPF_FUNC_probe_read_user, BPF_H, BPF_JEQ, BPF_JGT, BPF_JLT, BPF_JNE, BPF_JSET,
    BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_5, BPF_REG_6, BPF_REG_7, BPF_REG_8,
    BPF_REG_9, BPF_REG_10, BPF_W,
)
from perfbp.kernel.bpf import (
    BPF_ALU32_IMM, BPF_ALU32_REG, BPF_ALU64_IMM, BPF_ALU64_REG, BPF_ATOMIC_OP,
    BPF_EMIT_CALL, BPF_EXIT_INSN, BPF_JMP32_IMM, BPF_JMP32_REG, BPF_JMP_A, BPF_JMP_IMM,
    BPF_JMP_REG, BPF_LD_IMM64, BPF_LD_MAP_FD, BPF_LD_MAP_VALUE, BPF_LDX_MEM,
    BPF_MOV32_IMM, BPF_MOV32_REG, BPF_MOV64_IMM, BPF_MOV64_REG, BPF_ST_MEM,
    BPF_STX_MEM, Assembler, Insn, decode, encode,
)


def flat(*parts):
    """Instructions and BPF_LD_IMM64 pairs as one list."""
    out = []
    for p in parts:
        out.extend(p if isinstance(p, tuple) and not isinstance(p, Insn) else [p])
    return out


def hexes(insns) -> "list[str]":
    return [i.encode().hex(" ") for i in insns]


def test_sock_example_byte_for_byte():
    map_fd = 5
    prog = flat(
        BPF_MOV64_REG(BPF_REG_6, BPF_REG_1),
        BPF_STX_MEM(BPF_W, BPF_REG_10, BPF_REG_0, -4),
        BPF_MOV64_REG(BPF_REG_2, BPF_REG_10),
        BPF_ALU64_IMM(BPF_ADD, BPF_REG_2, -4),
        BPF_LD_MAP_FD(BPF_REG_1, map_fd),
        BPF_EMIT_CALL(BPF_FUNC_map_lookup_elem),
        BPF_JMP_IMM(BPF_JEQ, BPF_REG_0, 0, 2),
        BPF_MOV64_IMM(BPF_REG_1, 1),
        BPF_ATOMIC_OP(BPF_DW, BPF_ADD, BPF_REG_0, BPF_REG_1, 0),
        BPF_MOV64_IMM(BPF_REG_0, 0),
        BPF_EXIT_INSN(),
    )
    assert hexes(prog) == [
        "bf 16 00 00 00 00 00 00",  # r6 = r1
        "63 0a fc ff 00 00 00 00",  # *(u32 *)(r10 -4) = r0
        "bf a2 00 00 00 00 00 00",  # r2 = r10
        "07 02 00 00 fc ff ff ff",  # r2 += -4
        "18 11 00 00 05 00 00 00",  # r1 = map[id:5] ll
        "00 00 00 00 00 00 00 00",  #   (its high half)
        "85 00 00 00 01 00 00 00",  # call bpf_map_lookup_elem#1
        "15 00 02 00 00 00 00 00",  # if r0 == 0x0 goto pc+2
        "b7 01 00 00 01 00 00 00",  # r1 = 1
        "db 10 00 00 00 00 00 00",  # lock *(u64 *)(r0 +0) += r1
        "b7 00 00 00 00 00 00 00",  # r0 = 0
        "95 00 00 00 00 00 00 00",  # exit
    ]
    assert encode(prog) == bytes.fromhex("".join(hexes(prog)).replace(" ", ""))


@pytest.mark.parametrize("insn, expected", [
    (BPF_ALU64_REG(BPF_AND, BPF_REG_1, BPF_REG_9), "5f 91 00 00 00 00 00 00"),
    (BPF_ALU32_REG(BPF_ADD, BPF_REG_2, BPF_REG_3), "0c 32 00 00 00 00 00 00"),
    (BPF_ALU64_IMM(BPF_AND, BPF_REG_1, 0x7fffffff), "57 01 00 00 ff ff ff 7f"),
    (BPF_ALU32_IMM(BPF_AND, BPF_REG_3, 0xff), "54 03 00 00 ff 00 00 00"),
    (BPF_MOV64_IMM(BPF_REG_0, -1), "b7 00 00 00 ff ff ff ff"),
    (BPF_MOV32_IMM(BPF_REG_2, 8), "b4 02 00 00 08 00 00 00"),
    (BPF_MOV32_REG(BPF_REG_2, BPF_REG_8), "bc 82 00 00 00 00 00 00"),
    (BPF_LDX_MEM(BPF_B, BPF_REG_8, BPF_REG_10, -8), "71 a8 f8 ff 00 00 00 00"),
    (BPF_LDX_MEM(BPF_H, BPF_REG_8, BPF_REG_10, -8), "69 a8 f8 ff 00 00 00 00"),
    (BPF_LDX_MEM(BPF_DW, BPF_REG_3, BPF_REG_6, 176), "79 63 b0 00 00 00 00 00"),
    (BPF_STX_MEM(BPF_DW, BPF_REG_7, BPF_REG_8, 16), "7b 87 10 00 00 00 00 00"),
    (BPF_ST_MEM(BPF_W, BPF_REG_10, -4, 0), "62 0a fc ff 00 00 00 00"),
    (BPF_ST_MEM(BPF_DW, BPF_REG_10, -8, -2), "7a 0a f8 ff fe ff ff ff"),
    (BPF_ATOMIC_OP(BPF_W, BPF_ADD | BPF_FETCH, BPF_REG_7, BPF_REG_1, 8),
     "c3 17 08 00 01 00 00 00"),
    (BPF_JMP_REG(BPF_JGT, BPF_REG_8, BPF_REG_9, -2), "2d 98 fe ff 00 00 00 00"),
    (BPF_JMP_IMM(BPF_JNE, BPF_REG_0, 0, 3), "55 00 03 00 00 00 00 00"),
    (BPF_JMP_IMM(BPF_JSET, BPF_REG_8, 0x80, 1), "45 08 01 00 80 00 00 00"),
    (BPF_JMP32_IMM(BPF_JLT, BPF_REG_1, 5, 2), "a6 01 02 00 05 00 00 00"),
    (BPF_JMP32_REG(BPF_JEQ, BPF_REG_1, BPF_REG_2, 0x7fff), "1e 21 ff 7f 00 00 00 00"),
    (BPF_JMP_A(-32768), "05 00 00 80 00 00 00 00"),
    (BPF_EMIT_CALL(BPF_FUNC_probe_read_user), "85 00 00 00 70 00 00 00"),
])
def test_one_instruction(insn, expected):
    assert insn.encode().hex(" ") == expected
    assert Insn.decode(insn.encode()) == insn


def test_ld_imm64_splits_the_constant_low_half_first():
    assert hexes(BPF_LD_IMM64(BPF_REG_2, 0x1122334455667788)) == [
        "18 02 00 00 88 77 66 55",  # r2 = 0x1122334455667788 ll
        "00 00 00 00 44 33 22 11",
    ]
    assert hexes(BPF_LD_IMM64(BPF_REG_5, 0xffffffffffffffff)) == [
        "18 05 00 00 ff ff ff ff", "00 00 00 00 ff ff ff ff"]


def test_ld_map_value_is_the_fd_then_the_offset():
    assert hexes(BPF_LD_MAP_VALUE(BPF_REG_7, 4, 16)) == [
        "18 27 00 00 04 00 00 00",  # r7 = map[id:4][0]+16
        "00 00 00 00 10 00 00 00",
    ]


def test_decode_is_encode_reversed():
    prog = flat(BPF_LD_IMM64(BPF_REG_1, 0x8000000000000001), BPF_MOV64_IMM(BPF_REG_0, -5),
                BPF_EXIT_INSN())
    back = decode(encode(prog))
    assert encode(back) == encode(prog)
    assert back[2].imm == -5
    with pytest.raises(ValueError, match="whole number of instructions"):
        decode(b"\x95" * 9)


@pytest.mark.parametrize("build", [
    lambda: BPF_MOV64_IMM(BPF_REG_0, 1 << 31),             # sign-extended: refused
    lambda: BPF_ALU64_IMM(BPF_AND, BPF_REG_1, 0xffffffff),
    lambda: BPF_JMP_IMM(BPF_JEQ, BPF_REG_1, -(1 << 31) - 1, 0),
])
def test_immediates_that_would_be_sign_extended_are_refused(build):
    with pytest.raises(ValueError, match="BPF_LD_IMM64"):
        build()


@pytest.mark.parametrize("insn", [
    Insn(0xb7, 11), Insn(0xb7, 0, 16), Insn(0x05, off=1 << 15), Insn(0xb7, imm=1 << 32)])
def test_fields_that_do_not_fit_are_refused(insn):
    with pytest.raises(ValueError):
        insn.encode()


# --- the assembler ---------------------------------------------------------------------

def test_labels_resolve_to_offsets_counted_after_the_jump():
    asm = Assembler()
    asm.emit(BPF_JMP_IMM(BPF_JEQ, BPF_REG_1, 0, "zero"),
             BPF_LD_IMM64(BPF_REG_0, 1 << 40),   # two slots
             BPF_EXIT_INSN())
    asm.label("zero")
    asm.emit(BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN())
    out = asm.assemble()
    assert hexes(out) == [
        "15 01 03 00 00 00 00 00",  # if r1 == 0x0 goto pc+3
        "18 00 00 00 00 00 00 00",  # r0 = 0x10000000000 ll
        "00 00 00 00 00 01 00 00",
        "95 00 00 00 00 00 00 00",  # exit
        "b7 00 00 00 00 00 00 00",  # r0 = 0
        "95 00 00 00 00 00 00 00",  # exit
    ]


def test_backward_jumps_are_negative():
    asm = Assembler()
    asm.label("top")
    asm.emit(BPF_ALU64_IMM(BPF_ADD, BPF_REG_1, -1),
             BPF_JMP_IMM(BPF_JGT, BPF_REG_1, 0, "top"),
             BPF_EXIT_INSN())
    assert [i.off for i in asm.assemble()] == [0, -2, 0]


def test_a_jump_to_the_next_instruction_is_dropped():
    asm = Assembler()
    asm.emit(BPF_MOV64_IMM(BPF_REG_0, 0), BPF_JMP_A("next"))
    asm.label("unused")
    asm.label("next")
    asm.emit(BPF_EXIT_INSN())
    assert hexes(asm.assemble()) == ["b7 00 00 00 00 00 00 00", "95 00 00 00 00 00 00 00"]


def test_unreachable_instructions_are_dropped():
    # the verifier refuses a program with an instruction no path reaches
    asm = Assembler()
    asm.emit(BPF_JMP_A("end"),
             BPF_MOV64_IMM(BPF_REG_0, 7))         # unreachable
    asm.label("dead")                               # reached by nobody
    asm.emit(BPF_JMP_IMM(BPF_JLT, BPF_REG_1, 3, "end"), BPF_EXIT_INSN())
    asm.label("end")
    asm.emit(BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN())
    assert hexes(asm.assemble()) == ["b7 00 00 00 00 00 00 00", "95 00 00 00 00 00 00 00"]


def test_an_unbound_label_or_a_label_bound_twice_is_an_error():
    asm = Assembler()
    asm.emit(BPF_JMP_A("nowhere"), BPF_EXIT_INSN())
    with pytest.raises(ValueError, match="never bound"):
        asm.assemble()
    asm.label("x")
    with pytest.raises(ValueError, match="twice"):
        asm.label("x")
    with pytest.raises(ValueError, match="not resolved"):
        BPF_JMP_A("x").encode()


def test_new_labels_are_distinct():
    asm = Assembler()
    assert len({asm.new_label("and") for _ in range(5)}) == 5


def test_a_program_keeps_registers_it_is_given():
    # r8 and r9 in both fields of one instruction: the nibbles are not swapped
    insn = BPF_JMP_REG(BPF_JLT, BPF_REG_8, BPF_REG_9, 1)
    assert (insn.encode()[1], insn.dst_reg, insn.src_reg) == (0x98, BPF_REG_8, BPF_REG_9)
    assert BPF_MOV64_REG(BPF_REG_3, BPF_REG_7).encode()[1] == 0x73
