"""Names to addresses: ELF symbols and objects as ld.so loads them, DWARF variables and members, source lines, and resolution in a program or a running process."""
