/* store/schema.h - pool.db.sql, compiled into the binary by CMake. */
#ifndef SHROUD_STORE_SCHEMA_H
#define SHROUD_STORE_SCHEMA_H

/* The whole of pool.db.sql, NUL-terminated. */
extern const char store_schema_sql[];

#endif
