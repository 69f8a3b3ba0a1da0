/* cli.h: the subcommands of src/ and the helpers they share. */
#ifndef MASQ_CLI_H
#define MASQ_CLI_H

int cmd_demo(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

#endif
