#include "config.h"
#include <stdio.h>
#include "src/cli.h"
int main(int argc, char **argv) { (void)argc; (void)argv; return 0; }
