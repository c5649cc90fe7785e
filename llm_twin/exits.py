"""Exit codes (DESIGN.md "Command-line contract")."""

OK = 0
SOME_INPUTS_FAILED = 1
NOTHING_TO_WORK_ON = 2
NO_STACK = 3

NO_STACK_MESSAGE = "no stack: run `llm-twin infra up`"
