from perfbp.cli import main

main()
