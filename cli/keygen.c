/* cli/keygen.c - `shroud keygen FILE`: a client's own key pair for the encrypted link. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "cli/cli.h"
#include "crypto/keys.h"

static void keygen_usage(FILE *f)
{
	fprintf(f,
		"Usage: %s keygen FILE\n\n"
		"Make an X25519 key pair for a client of the encrypted link: write the private key to\n"
		"FILE (one line of base64, mode 0600) and print the public key (base64, %d characters)\n"
		"on standard output. Give the public key to the operator, who runs\n"
		"'%s link allow NAME PUBKEY --user USER --server HOST:PORT' and hands back an access\n"
		"key without a private part; the private key never leaves this machine.\n\n"
		"FILE must not exist: an existing file, or a symbolic link even to nowhere, is refused\n"
		"and left as it was.\n\n"
		"Options:\n"
		"  --help   this text\n",
		cli_progname, KEYS_BASE64_LEN, cli_progname);
}

/* Create path for the key, refusing anything already there. The fd, or -1 with a message. */
static int keygen_create(const char *path)
{
	struct stat st;
	int fd, saved;

	/* O_EXCL: never write into a file that exists, nor through a symbolic link (O_CREAT |
	 * O_EXCL fails on one whatever it points to); O_NOFOLLOW says so twice. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		saved = errno;
		if (saved == EEXIST && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			cli_error("keygen: %s is a symbolic link: refusing to write a key through it",
				  path);
		else if (saved == EEXIST)
			cli_error("keygen: %s exists: refusing to overwrite it", path);
		else
			cli_error("keygen: cannot create %s: %s", path, strerror(saved));
		return -1;
	}
	/* 0600 whatever the umask took away: a key file of another mode would be refused. */
	if (fchmod(fd, 0600) != 0) {
		cli_error("keygen: cannot set the mode of %s: %s", path, strerror(errno));
		close(fd);
		(void)unlink(path);
		return -1;
	}
	return fd;
}

int cmd_keygen(int argc, char **argv)
{
	static const struct option options[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct keys_secret *priv = NULL, *text = NULL;
	uint8_t pub[KEYS_X25519_BYTES];
	char pub_text[KEYS_BASE64_SIZE];
	const char *path = NULL;
	char *line;
	int opt, fd = -1, rc = CLI_FAIL;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "-", options, NULL)) != -1) {
		switch (opt) {
		case 1:
			if (path != NULL) {
				cli_error("keygen: unexpected argument '%s' (one FILE)", optarg);
				return CLI_USAGE;
			}
			path = optarg;
			break;
		case 'h':
			keygen_usage(stdout);
			return CLI_OK;
		default:
			cli_error("keygen: unknown option '%s' (see '%s keygen --help')",
				  argv[optind - 1], cli_progname);
			return CLI_USAGE;
		}
	}
	if (optind < argc) {
		if (path != NULL) {
			cli_error("keygen: unexpected argument '%s' (one FILE)", argv[optind]);
			return CLI_USAGE;
		}
		path = argv[optind++];
		if (optind < argc) {
			cli_error("keygen: unexpected argument '%s' (one FILE)", argv[optind]);
			return CLI_USAGE;
		}
	}
	if (path == NULL || path[0] == '\0') {
		cli_error("keygen: which FILE should the private key go to?");
		return CLI_USAGE;
	}

	/* The key and its text in guarded memory; the text is one line: base64 and "\n". */
	if (keys_secret_new(KEYS_X25519_BYTES, &priv) != ST_OK ||
	    keys_secret_new(KEYS_BASE64_SIZE + 1, &text) != ST_OK) {
		cli_error("keygen: out of memory");
		goto out;
	}
	if (keys_x25519_generate(priv, pub) != ST_OK) {
		cli_error("keygen: cannot make a key pair");
		goto out;
	}
	line = (char *)keys_secret_data(text);
	keys_base64_encode(line, keys_secret_bytes(priv));
	line[KEYS_BASE64_LEN] = '\n';
	keys_base64_encode(pub_text, pub);

	fd = keygen_create(path);
	if (fd < 0)
		goto out;
	if (!cli_write_all(fd, line, KEYS_BASE64_LEN + 1) || fsync(fd) != 0) {
		cli_error("keygen: cannot write %s: %s", path, strerror(errno));
		close(fd);
		(void)unlink(path);
		goto out;
	}
	if (close(fd) != 0) {
		cli_error("keygen: cannot write %s: %s", path, strerror(errno));
		(void)unlink(path);
		goto out;
	}
	printf("%s\n", pub_text);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_error("keygen: cannot print the public key (the private key is in %s)", path);
		goto out;
	}
	cli_error("wrote the private key to %s (mode 0600); give the public key above to the "
		  "operator of the server",
		  path);
	rc = CLI_OK;
out:
	keys_secret_free(priv);
	keys_secret_free(text);
	return rc;
}
