/* base/status.c - strings for the status table. */
#include "base/status.h"

const char *status_str(int status)
{
	switch (status) {
#define STATUS_CASE(name, value, text) \
	case name:                     \
		return text;
		STATUS_TABLE(STATUS_CASE)
#undef STATUS_CASE
	}
	return "unknown status";
}
