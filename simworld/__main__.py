from simworld.cli import main

main()
