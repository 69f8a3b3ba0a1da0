/*
 * cmd_demo.c: masq demo DIR [--preset P] [--seed N]
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/demo.h"
#include "src/cli.h"


int
cmd_demo(int argc, char **argv)
{
	static const struct option opts[] = {
		{"preset", required_argument, NULL, 'p'},
		{"seed", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *preset = "tiny";
	long seed = DEMO_DEFAULT_SEED;
	demo_preset p;
	masq_err err = {0};
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			preset = optarg;
			break;
		case 's':
			if (cli_int("demo", "--seed", optarg, 0, 0x7fffffffL, &seed) < 0)
				return 2;
			break;
		case 'h':
			cli_cmd_help("demo");
			return 0;
		default:
			return cli_usage("demo", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage("demo", "expected one directory, got %d arguments", argc - optind);
	if (demo_preset_get(preset, &p) < 0) {
		char names[128] = "";
		for (int i = 0; demo_preset_names[i] != NULL; i++)
			snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
			    i ? ", " : "", demo_preset_names[i]);
		return cli_usage("demo", "unknown preset '%s' (presets: %s)", preset, names);
	}
	double t0 = masq_now();
	if (demo_write(argv[optind], &p, (uint64_t)seed, &err) < 0)
		return cli_fail(&err);
	printf("wrote %s/model and %s/calib.safetensors (preset %s, seed %ld) in %.1f s\n",
	    argv[optind], argv[optind], p.name, seed, masq_now() - t0);
	return 0;
}
