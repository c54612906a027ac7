"""Kernel layouts and constants, declared once, as data.

This module is the bottom layer of perfbp: the C declarations of the perf
user-space ABI (``include/uapi/linux/perf_event.h`` and
``include/uapi/linux/hw_breakpoint.h``) and of the parts of the BPF ABI perfbp
uses (``include/uapi/linux/bpf.h``, ``bpf_common.h``, ``bpf_perf_event.h``) as
the kernel spells them, and the constants that go with them.  It imports nothing from perfbp and touches no
kernel; :mod:`perfbp.kernel.abi` hands :data:`CDEF` to cffi.

The declaration follows the current UAPI (Linux 6.13+: ``aux_action`` bits,
``sig_data`` and ``config3``; ``PERF_ATTR_SIZE_VER8`` = 136 bytes).  A kernel
that knows a smaller attr accepts the larger size as long as the bytes it does
not know are zero, which they are unless a caller sets ``config3`` or the
``aux_*`` bits (those give E2BIG or EINVAL on kernels older than 6.3 / 6.13).
``tests/test_abi_layout.py`` compiles a C probe against the system's
``<linux/perf_event.h>`` and compares every field both know;
``tests/test_bpf_abi.py`` does the same for ``<linux/bpf.h>``.
"""

from __future__ import annotations

CDEF = r"""
typedef uint64_t __u64;
typedef int64_t __s64;
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint16_t __u16;
typedef uint8_t __u8;

struct perf_event_attr {
    __u32 type;
    __u32 size;
    __u64 config;
    union {
        __u64 sample_period;
        __u64 sample_freq;
    };
    __u64 sample_type;
    __u64 read_format;
    __u64 disabled       : 1,
          inherit        : 1,
          pinned         : 1,
          exclusive      : 1,
          exclude_user   : 1,
          exclude_kernel : 1,
          exclude_hv     : 1,
          exclude_idle   : 1,
          mmap           : 1,
          comm           : 1,
          freq           : 1,
          inherit_stat   : 1,
          enable_on_exec : 1,
          task           : 1,
          watermark      : 1,
          precise_ip     : 2,
          mmap_data      : 1,
          sample_id_all  : 1,
          exclude_host   : 1,
          exclude_guest  : 1,
          exclude_callchain_kernel : 1,
          exclude_callchain_user   : 1,
          mmap2          : 1,
          comm_exec      : 1,
          use_clockid    : 1,
          context_switch : 1,
          write_backward : 1,
          namespaces     : 1,
          ksymbol        : 1,
          bpf_event      : 1,
          aux_output     : 1,
          cgroup         : 1,
          text_poke      : 1,
          build_id       : 1,
          inherit_thread : 1,
          remove_on_exec : 1,
          sigtrap        : 1,
          __reserved_1   : 26;
    union {
        __u32 wakeup_events;
        __u32 wakeup_watermark;
    };
    __u32 bp_type;
    union {
        __u64 bp_addr;
        __u64 kprobe_func;
        __u64 uprobe_path;
        __u64 config1;
    };
    union {
        __u64 bp_len;
        __u64 kprobe_addr;
        __u64 probe_offset;
        __u64 config2;
    };
    __u64 branch_sample_type;
    __u64 sample_regs_user;
    __u32 sample_stack_user;
    __s32 clockid;
    __u64 sample_regs_intr;
    __u32 aux_watermark;
    __u16 sample_max_stack;
    __u16 __reserved_2;
    __u32 aux_sample_size;
    union {
        __u32 aux_action;
        struct {
            __u32 aux_start_paused : 1,
                  aux_pause        : 1,
                  aux_resume       : 1,
                  __reserved_3     : 29;
        };
    };
    __u64 sig_data;
    __u64 config3;
};

struct perf_event_header {
    __u32 type;
    __u16 misc;
    __u16 size;
};

struct perf_event_mmap_page {
    __u32 version;
    __u32 compat_version;
    __u32 lock;
    __u32 index;
    __s64 offset;
    __u64 time_enabled;
    __u64 time_running;
    union {
        __u64 capabilities;
        struct {
            __u64 cap_bit0               : 1,
                  cap_bit0_is_deprecated : 1,
                  cap_user_rdpmc         : 1,
                  cap_user_time          : 1,
                  cap_user_time_zero     : 1,
                  cap_user_time_short    : 1,
                  cap_____res            : 58;
        };
    };
    __u16 pmc_width;
    __u16 time_shift;
    __u32 time_mult;
    __u64 time_offset;
    __u64 time_zero;
    __u32 size;
    __u32 __reserved_1;
    __u64 time_cycles;
    __u64 time_mask;
    __u8  __reserved[928];
    __u64 data_head;
    __u64 data_tail;
    __u64 data_offset;
    __u64 data_size;
    __u64 aux_head;
    __u64 aux_tail;
    __u64 aux_offset;
    __u64 aux_size;
};

/* union bpf_attr (include/uapi/linux/bpf.h) is one anonymous struct per
   bpf(2) command; perfbp declares the ones it uses as structs of their own,
   up to the last field it sets, with the kernel's field names.  The kernel
   takes a shorter attr as long as it is given the size (bpf_check_uarg_tail_zero). */
struct bpf_attr_map_create {      /* BPF_MAP_CREATE */
    __u32 map_type;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    __u32 inner_map_fd;
    __u32 numa_node;
    char  map_name[16];
};

struct bpf_attr_map_elem {        /* BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM */
    __u32 map_fd;
    __u64 key;
    union {
        __u64 value;
        __u64 next_key;
    };
    __u64 flags;
};

struct bpf_attr_prog_load {       /* BPF_PROG_LOAD */
    __u32 prog_type;
    __u32 insn_cnt;
    __u64 insns;
    __u64 license;
    __u32 log_level;
    __u32 log_size;
    __u64 log_buf;
    __u32 kern_version;
    __u32 prog_flags;
    char  prog_name[16];
    __u32 prog_ifindex;
    __u32 expected_attach_type;
};

long syscall(long number, ...);
int sigaction(int signum, const void *act, void *oldact);
int ioctl(int fd, unsigned long request, ...);
int close(int fd);
"""

# --- enum perf_type_id -------------------------------------------------------
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_TYPE_HW_CACHE = 3
PERF_TYPE_RAW = 4
PERF_TYPE_BREAKPOINT = 5

PERF_COUNT_SW_DUMMY = 9  # enum perf_sw_ids: counts nothing; carries side-band records
PERF_COUNT_SW_BPF_OUTPUT = 10  # samples that BPF programs write (bpf_perf_event_output)

# --- attr.size versions -------------------------------------------------------
PERF_ATTR_SIZE_VER0 = 64
PERF_ATTR_SIZE_VER1 = 72
PERF_ATTR_SIZE_VER2 = 80
PERF_ATTR_SIZE_VER3 = 96
PERF_ATTR_SIZE_VER4 = 104
PERF_ATTR_SIZE_VER5 = 112
PERF_ATTR_SIZE_VER6 = 120
PERF_ATTR_SIZE_VER7 = 128
PERF_ATTR_SIZE_VER8 = 136

# --- enum perf_event_sample_format -------------------------------------------
PERF_SAMPLE_IP = 1 << 0
PERF_SAMPLE_TID = 1 << 1
PERF_SAMPLE_TIME = 1 << 2
PERF_SAMPLE_ADDR = 1 << 3
PERF_SAMPLE_READ = 1 << 4
PERF_SAMPLE_CALLCHAIN = 1 << 5
PERF_SAMPLE_ID = 1 << 6
PERF_SAMPLE_CPU = 1 << 7
PERF_SAMPLE_PERIOD = 1 << 8
PERF_SAMPLE_STREAM_ID = 1 << 9
PERF_SAMPLE_RAW = 1 << 10
PERF_SAMPLE_BRANCH_STACK = 1 << 11
PERF_SAMPLE_REGS_USER = 1 << 12
PERF_SAMPLE_STACK_USER = 1 << 13
PERF_SAMPLE_WEIGHT = 1 << 14
PERF_SAMPLE_DATA_SRC = 1 << 15
PERF_SAMPLE_IDENTIFIER = 1 << 16
PERF_SAMPLE_TRANSACTION = 1 << 17
PERF_SAMPLE_REGS_INTR = 1 << 18
PERF_SAMPLE_PHYS_ADDR = 1 << 19
PERF_SAMPLE_AUX = 1 << 20
PERF_SAMPLE_CGROUP = 1 << 21
PERF_SAMPLE_DATA_PAGE_SIZE = 1 << 22
PERF_SAMPLE_CODE_PAGE_SIZE = 1 << 23
PERF_SAMPLE_WEIGHT_STRUCT = 1 << 24

# enum perf_sample_regs_abi: what a sample's PERF_SAMPLE_REGS_USER holds
PERF_SAMPLE_REGS_ABI_NONE = 0
PERF_SAMPLE_REGS_ABI_32 = 1
PERF_SAMPLE_REGS_ABI_64 = 2

# --- enum perf_event_read_format ----------------------------------------------
PERF_FORMAT_TOTAL_TIME_ENABLED = 1 << 0
PERF_FORMAT_TOTAL_TIME_RUNNING = 1 << 1
PERF_FORMAT_ID = 1 << 2
PERF_FORMAT_GROUP = 1 << 3
PERF_FORMAT_LOST = 1 << 4

# --- perf_event_open flags ----------------------------------------------------
PERF_FLAG_FD_NO_GROUP = 1 << 0
PERF_FLAG_FD_OUTPUT = 1 << 1
PERF_FLAG_PID_CGROUP = 1 << 2
PERF_FLAG_FD_CLOEXEC = 1 << 3

# --- enum perf_event_type ------------------------------------------------------
PERF_RECORD_MMAP = 1
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_THROTTLE = 5
PERF_RECORD_UNTHROTTLE = 6
PERF_RECORD_FORK = 7
PERF_RECORD_READ = 8
PERF_RECORD_SAMPLE = 9
PERF_RECORD_MMAP2 = 10
PERF_RECORD_AUX = 11
PERF_RECORD_ITRACE_START = 12
PERF_RECORD_LOST_SAMPLES = 13
PERF_RECORD_SWITCH = 14
PERF_RECORD_SWITCH_CPU_WIDE = 15
PERF_RECORD_NAMESPACES = 16
PERF_RECORD_KSYMBOL = 17
PERF_RECORD_BPF_EVENT = 18
PERF_RECORD_CGROUP = 19
PERF_RECORD_TEXT_POKE = 20
PERF_RECORD_AUX_OUTPUT_HW_ID = 21

PERF_RECORD_MISC_CPUMODE_MASK = 7
PERF_RECORD_MISC_KERNEL = 1
PERF_RECORD_MISC_USER = 2
PERF_RECORD_MISC_COMM_EXEC = 1 << 13

PERF_CONTEXT_HV = (-32) & 0xFFFFFFFFFFFFFFFF
PERF_CONTEXT_KERNEL = (-128) & 0xFFFFFFFFFFFFFFFF
PERF_CONTEXT_USER = (-512) & 0xFFFFFFFFFFFFFFFF
PERF_CONTEXT_MAX = (-4095) & 0xFFFFFFFFFFFFFFFF

# --- include/uapi/linux/hw_breakpoint.h --------------------------------------
HW_BREAKPOINT_LEN_1 = 1
HW_BREAKPOINT_LEN_2 = 2
HW_BREAKPOINT_LEN_3 = 3
HW_BREAKPOINT_LEN_4 = 4
HW_BREAKPOINT_LEN_5 = 5
HW_BREAKPOINT_LEN_6 = 6
HW_BREAKPOINT_LEN_7 = 7
HW_BREAKPOINT_LEN_8 = 8

HW_BREAKPOINT_EMPTY = 0
HW_BREAKPOINT_R = 1
HW_BREAKPOINT_W = 2
HW_BREAKPOINT_RW = HW_BREAKPOINT_R | HW_BREAKPOINT_W
HW_BREAKPOINT_X = 4
HW_BREAKPOINT_INVALID = HW_BREAKPOINT_RW | HW_BREAKPOINT_X


# --- ioctls: include/uapi/asm-generic/ioctl.h encoding -------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, typ: str, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (ord(typ) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(typ: str, nr: int) -> int:
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOW(typ: str, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, typ, nr, size)


def _IOR(typ: str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, typ, nr, size)


def _IOWR(typ: str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, size)


_PTR = 8  # sizeof(void *) on the 64-bit ABIs perfbp supports

PERF_EVENT_IOC_ENABLE = _IO("$", 0)
PERF_EVENT_IOC_DISABLE = _IO("$", 1)
PERF_EVENT_IOC_REFRESH = _IO("$", 2)
PERF_EVENT_IOC_RESET = _IO("$", 3)
PERF_EVENT_IOC_PERIOD = _IOW("$", 4, 8)
PERF_EVENT_IOC_SET_OUTPUT = _IO("$", 5)
PERF_EVENT_IOC_SET_FILTER = _IOW("$", 6, _PTR)
PERF_EVENT_IOC_ID = _IOR("$", 7, _PTR)
PERF_EVENT_IOC_SET_BPF = _IOW("$", 8, 4)
PERF_EVENT_IOC_PAUSE_OUTPUT = _IOW("$", 9, 4)
PERF_EVENT_IOC_QUERY_BPF = _IOWR("$", 10, _PTR)
PERF_EVENT_IOC_MODIFY_ATTRIBUTES = _IOW("$", 11, _PTR)

PERF_IOC_FLAG_GROUP = 1

# --- syscall numbers ----------------------------------------------------------
#: ``__NR_perf_event_open`` per machine (``uname -m``).
NR_PERF_EVENT_OPEN = {
    "x86_64": 298,
    "aarch64": 241,
    "ppc64le": 319,
    "ppc64": 319,
    "riscv64": 241,
    "s390x": 331,
    "loongarch64": 241,
}


# --- BPF: include/uapi/linux/bpf_common.h and bpf.h ------------------------------
# An instruction is ``struct bpf_insn``: u8 code, u8 dst_reg:4 + src_reg:4,
# s16 off, s32 imm (perfbp.kernel.bpf encodes it).  code = class | size | mode
# for loads and stores, class | op | source for ALU and jumps.

# instruction classes
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# load and store sizes
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18

# load and store modes
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_ATOMIC = 0xc0

# ALU operations
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xa0
BPF_MOV = 0xb0
BPF_ARSH = 0xc0
BPF_END = 0xd0

# jump operations
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xa0
BPF_JLE = 0xb0
BPF_JSLT = 0xc0
BPF_JSLE = 0xd0

# the operand: the immediate (K) or the source register (X)
BPF_K = 0x00
BPF_X = 0x08

# atomic operations (imm of a BPF_ATOMIC store); BPF_ADD above is the plain add
BPF_FETCH = 0x01
BPF_XCHG = 0xe0 | BPF_FETCH
BPF_CMPXCHG = 0xf0 | BPF_FETCH

# registers (enum bpf_reg): r0 result, r1-r5 arguments (clobbered by calls),
# r6-r9 kept across calls, r10 the read-only frame pointer
BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_4, BPF_REG_5 = range(6)
BPF_REG_6, BPF_REG_7, BPF_REG_8, BPF_REG_9, BPF_REG_10 = range(6, 11)
MAX_BPF_REG = 11

# src_reg of a BPF_LD | BPF_DW | BPF_IMM: what its 64-bit immediate means
BPF_PSEUDO_MAP_FD = 1     # imm: a map's fd; becomes the map's address
BPF_PSEUDO_MAP_VALUE = 2  # imm: a map's fd, the next imm: an offset into its value

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5

# enum bpf_map_type, enum bpf_prog_type
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_PROG_TYPE_PERF_EVENT = 7

# map update flags
BPF_ANY = 0
# map_create flags
BPF_F_MMAPABLE = 1 << 10  # an array map's values can be mmapped (Linux 5.5)

# enum bpf_func_id: the helpers perfbp calls
BPF_FUNC_map_lookup_elem = 1
BPF_FUNC_perf_event_output = 25
BPF_FUNC_probe_read_user = 112
BPF_FUNC_probe_read_kernel = 113

BPF_OBJ_NAME_LEN = 16
#: bpf_perf_event_output's flags: the map's entry for the CPU the program runs on
BPF_F_CURRENT_CPU = 0xFFFFFFFF

#: ``offsetof(struct bpf_perf_event_data, addr)`` per machine (``uname -m``):
#: the context of a BPF_PROG_TYPE_PERF_EVENT program is the user registers
#: (``bpf_user_pt_regs_t``, which differs per architecture), then
#: ``__u64 sample_period``, then ``__u64 addr``, the sample's address: for a
#: breakpoint, its ``bp_addr`` (include/uapi/linux/bpf_perf_event.h).
BPF_PERF_EVENT_DATA_ADDR = {
    "x86_64": 176,   # struct pt_regs: 21 u64
}
# (aarch64's would be 280, after struct user_pt_regs, but an arm64 watchpoint
# fires before the access: the program would read the value before the
# write as ``new``; values are refused there until that is modelled)

#: ``__NR_bpf`` per machine (``uname -m``).
NR_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "ppc64le": 361,
    "ppc64": 361,
    "riscv64": 280,
    "s390x": 351,
    "loongarch64": 280,
}
