from privatellm.cli import main

main()
