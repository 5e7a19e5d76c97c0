from modelport.cli import main

# Named as the installed command, so `python -m modelport` shows `modelport` in its help and
# answers shell completion (_MODELPORT_COMPLETE=bash_source) like the `modelport` script.
main(prog_name="modelport")
