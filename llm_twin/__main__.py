from llm_twin.cli import main

main()
