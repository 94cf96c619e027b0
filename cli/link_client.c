/*
 * cli/link_client.c - `shroud link --access-key-file FILE ...`: the encrypted link's client.
 * Reserved: the client is being written (issue 4); until it lands, this says so.
 */
#include "cli/cli.h"

int cmd_link_client(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	cli_error("link: the client mode (--access-key-file) is not built yet");
	return CLI_USAGE;
}
