package storage

import (
	"context"
	"fmt"
)

// AppliedSchemaVersions lists the versions recorded in schema_migrations.
func AppliedSchemaVersions(ctx context.Context, db *DB) ([]int64, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("listing schema versions: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ExecForTest runs one statement, written with "?" placeholders, on the
// writer.
func ExecForTest(ctx context.Context, db *DB, query string, args ...any) error {
	_, err := db.write.ExecContext(ctx, db.dialect.sql(query), args...)
	return err
}
