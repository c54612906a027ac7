from perfbp.cli import console

console()
