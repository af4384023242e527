from anime_cli.cli.app import main

main()
