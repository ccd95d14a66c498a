from qrt.cli.main import main

main()
