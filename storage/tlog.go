package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// tlogQueries are the transparency log's statements for one dialect.
type tlogQueries struct {
	loadState   string
	updateState string
	putTile     string
	getTile     string
}

func newTlogQueries(d dialect) tlogQueries {
	return tlogQueries{
		loadState: d.sql(`SELECT size, checkpoint FROM tlog_state WHERE id = 1`),
		// The compare-and-swap: it matches no row unless the stored size is
		// the expected one. Under PostgreSQL the UPDATE waits for a
		// concurrent appender's row lock and then re-checks the size, so
		// exactly one of two appenders from the same size succeeds.
		updateState: d.sql(`UPDATE tlog_state SET size = ?, checkpoint = ? WHERE id = 1 AND size = ?`),
		putTile: d.sql(`INSERT INTO tlog_tiles (path, width, data) VALUES (?, ?, ?)
			ON CONFLICT (path) DO UPDATE SET width = excluded.width, data = excluded.data
			WHERE tlog_tiles.width < excluded.width`),
		getTile: d.sql(`SELECT width, data FROM tlog_tiles WHERE path = ?`),
	}
}

var (
	sqliteTlogQueries   = newTlogQueries(sqliteDialect)
	postgresTlogQueries = newTlogQueries(postgresDialect)
)

func (db *DB) tlogQ() *tlogQueries {
	if db.dialect.name == postgresDialect.name {
		return &postgresTlogQueries
	}
	return &sqliteTlogQueries
}

// LoadLogState returns the log's size and checkpoint; the zero state
// before the first append.
func (db *DB) LoadLogState(ctx context.Context) (LogState, error) {
	var st LogState
	err := db.read.QueryRowContext(ctx, db.tlogQ().loadState).Scan(&st.Size, &st.Checkpoint)
	if errors.Is(err, sql.ErrNoRows) {
		return LogState{}, nil
	}
	if err != nil {
		return LogState{}, fmt.Errorf("loading log state: %w", err)
	}
	if st.Size == 0 {
		st.Checkpoint = nil
	}
	return st, nil
}

// AppendLog writes b if the stored size is prevSize, in one transaction;
// ErrConflict and nothing written otherwise.
func (db *DB) AppendLog(ctx context.Context, prevSize int64, b LogBatch) error {
	if b.Size <= prevSize {
		return fmt.Errorf("appending to log at size %d: new size %d does not grow it", prevSize, b.Size)
	}
	if len(b.Checkpoint) == 0 {
		return fmt.Errorf("appending to log at size %d: no checkpoint", prevSize)
	}
	for _, t := range b.Tiles {
		if t.Path == "" || t.Width < 1 || t.Width > 256 {
			return fmt.Errorf("appending to log at size %d: tile %q has width %d, want 1..256", prevSize, t.Path, t.Width)
		}
	}
	q := db.tlogQ()
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q.updateState, b.Size, blob(b.Checkpoint), prevSize)
		if err != nil {
			return fmt.Errorf("updating state: %w", err)
		}
		if err := expectOneRow(res); err != nil {
			return err
		}
		if len(b.Tiles) == 0 {
			return nil
		}
		stmt, err := tx.PrepareContext(ctx, q.putTile)
		if err != nil {
			return fmt.Errorf("preparing tile upsert: %w", err)
		}
		defer stmt.Close()
		for _, t := range b.Tiles {
			if _, err := stmt.ExecContext(ctx, t.Path, int64(t.Width), blob(t.Data)); err != nil {
				return fmt.Errorf("writing tile %s: %w", t.Path, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("appending to log from size %d to %d: %w", prevSize, b.Size, err)
	}
	return nil
}

// GetLogTile returns the widest tile stored at path, or ErrNotFound.
func (db *DB) GetLogTile(ctx context.Context, path string) (LogTile, error) {
	t := LogTile{Path: path}
	var width int64
	err := db.read.QueryRowContext(ctx, db.tlogQ().getTile, path).Scan(&width, &t.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return LogTile{}, fmt.Errorf("reading log tile %s: %w", path, ErrNotFound)
	}
	if err != nil {
		return LogTile{}, fmt.Errorf("reading log tile %s: %w", path, err)
	}
	t.Width = int(width)
	return t, nil
}
