from bench.serving.cli import main

main()
