package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Agents are one row each in agents; join tokens one row each in
// agent_join_tokens, keyed by the token's hash; agent_certificates lists
// what was signed for each agent. agents_revision counts agent changes.

const agentColumns = `id, spiffe_id, attestation, selectors, serial, not_after, attested_at, updated_at, evicted_at, revision`

type agentQueries struct {
	createToken, consumeToken                     string
	createAgent, updateAgent, getAgent, listAgent string
	agentExists, bump, revision                   string
	recordCert, listCerts                         string
}

func newAgentQueries(d dialect) *agentQueries {
	return &agentQueries{
		createToken: d.sql(`INSERT INTO agent_join_tokens (token_hash, node_id, groups, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`),
		// One statement removes and returns the row, so that of two
		// concurrent consumers exactly one sees it.
		consumeToken: d.sql(`DELETE FROM agent_join_tokens WHERE token_hash = ?
			RETURNING token_hash, node_id, groups, created_at, expires_at`),
		createAgent: d.sql(`INSERT INTO agents (` + agentColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT DO NOTHING`),
		updateAgent: d.sql(`UPDATE agents SET spiffe_id = ?, attestation = ?, selectors = ?, serial = ?, not_after = ?,
			attested_at = ?, updated_at = ?, evicted_at = ?, revision = revision + 1
			WHERE id = ? AND revision = ?`),
		getAgent:    d.sql(`SELECT ` + agentColumns + ` FROM agents WHERE id = ?`),
		listAgent:   d.sql(`SELECT ` + agentColumns + ` FROM agents WHERE id > ? ORDER BY id LIMIT ?`),
		agentExists: d.sql(`SELECT COUNT(*) FROM agents WHERE id = ?`),
		bump:        d.sql(`UPDATE agents_revision SET revision = revision + 1 WHERE id = 1`),
		revision:    d.sql(`SELECT revision FROM agents_revision WHERE id = 1`),
		recordCert: d.sql(`INSERT INTO agent_certificates (serial, agent_id, not_after)
			VALUES (?, ?, ?) ON CONFLICT DO NOTHING`),
		listCerts: d.sql(`SELECT serial, agent_id, not_after FROM agent_certificates
			WHERE agent_id = ? AND not_after > ? ORDER BY serial`),
	}
}

var (
	sqliteAgentQueries   = newAgentQueries(sqliteDialect)
	postgresAgentQueries = newAgentQueries(postgresDialect)
)

func (db *DB) agentQ() *agentQueries {
	if db.dialect.name == postgresDialect.name {
		return postgresAgentQueries
	}
	return sqliteAgentQueries
}

// CreateJoinToken stores a join token by its hash.
func (db *DB) CreateJoinToken(ctx context.Context, jt JoinToken) error {
	if jt.Hash == "" {
		return errors.New("storing join token: empty hash")
	}
	times, err := nanosAll(jt.CreatedAt, jt.ExpiresAt)
	if err != nil {
		return fmt.Errorf("storing join token: %w", err)
	}
	if !times[0].Valid || !times[1].Valid {
		return errors.New("storing join token: creation and expiry times are required")
	}
	groups, err := jsonList(jt.Groups)
	if err != nil {
		return fmt.Errorf("storing join token: %w", err)
	}
	res, err := db.write.ExecContext(ctx, db.agentQ().createToken, jt.Hash, jt.NodeID, groups, times[0], times[1])
	if err != nil {
		return fmt.Errorf("storing join token: %w", err)
	}
	if err := expectOneRow(res); err != nil {
		return fmt.Errorf("storing join token: the hash is stored already: %w", err)
	}
	db.commits.Add(1)
	return nil
}

// ConsumeJoinToken removes and returns an unexpired token.
func (db *DB) ConsumeJoinToken(ctx context.Context, hash string, now time.Time) (JoinToken, error) {
	var (
		jt                 JoinToken
		groups             string
		created, expiresAt sql.NullInt64
	)
	err := db.write.QueryRowContext(ctx, db.agentQ().consumeToken, hash).Scan(&jt.Hash, &jt.NodeID, &groups, &created, &expiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return JoinToken{}, fmt.Errorf("consuming join token: %w", ErrNotFound)
	}
	if err != nil {
		return JoinToken{}, fmt.Errorf("consuming join token: %w", err)
	}
	db.commits.Add(1)
	if err := json.Unmarshal([]byte(groups), &jt.Groups); err != nil {
		return JoinToken{}, fmt.Errorf("consuming join token: decoding its groups: %w", err)
	}
	jt.CreatedAt, jt.ExpiresAt = fromNanos(created), fromNanos(expiresAt)
	if !now.Before(jt.ExpiresAt) {
		return JoinToken{}, fmt.Errorf("consuming join token: expired: %w", ErrNotFound)
	}
	return jt, nil
}

func scanAgent(r rowScanner) (Agent, error) {
	var (
		a                             Agent
		sel                           string
		notAfter, att, upd, evictedAt sql.NullInt64
	)
	if err := r.Scan(&a.ID, &a.SPIFFEID, &a.Attestation, &sel, &a.Serial, &notAfter, &att, &upd, &evictedAt, &a.Revision); err != nil {
		return Agent{}, err
	}
	if err := json.Unmarshal([]byte(sel), &a.Selectors); err != nil {
		return Agent{}, fmt.Errorf("decoding the selectors of agent %s: %w", a.ID, err)
	}
	a.NotAfter, a.AttestedAt, a.UpdatedAt, a.EvictedAt = fromNanos(notAfter), fromNanos(att), fromNanos(upd), fromNanos(evictedAt)
	return a, nil
}

// PutAgent creates or compare-and-swaps an agent.
func (db *DB) PutAgent(ctx context.Context, a Agent, expectRevision int64) error {
	if a.ID == "" || a.SPIFFEID == "" {
		return errors.New("storing agent: ID and SPIFFE ID are required")
	}
	times, err := nanosAll(a.NotAfter, a.AttestedAt, a.UpdatedAt, a.EvictedAt)
	if err != nil {
		return fmt.Errorf("storing agent %s: %w", a.ID, err)
	}
	sel, err := jsonList(a.Selectors)
	if err != nil {
		return fmt.Errorf("storing agent %s: %w", a.ID, err)
	}
	q := db.agentQ()
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		if expectRevision == 0 {
			res, err = tx.ExecContext(ctx, q.createAgent, a.ID, a.SPIFFEID, a.Attestation, sel, a.Serial,
				times[0], times[1], times[2], times[3])
		} else {
			res, err = tx.ExecContext(ctx, q.updateAgent, a.SPIFFEID, a.Attestation, sel, a.Serial,
				times[0], times[1], times[2], times[3], a.ID, expectRevision)
		}
		if err != nil {
			return err
		}
		if err := expectOneRow(res); err != nil {
			if expectRevision == 0 {
				return fmt.Errorf("the ID or SPIFFE ID is taken: %w", ErrConflict)
			}
			var n int
			if err := tx.QueryRowContext(ctx, q.agentExists, a.ID).Scan(&n); err != nil {
				return fmt.Errorf("checking whether the agent exists: %w", err)
			}
			if n == 0 {
				return ErrNotFound
			}
			return fmt.Errorf("stored revision is not %d: %w", expectRevision, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, q.bump); err != nil {
			return fmt.Errorf("bumping agents revision: %w", err)
		}
		return nil
	})
	if err != nil {
		if isUniqueViolation(err) {
			err = fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return fmt.Errorf("storing agent %s: %w", a.ID, err)
	}
	return nil
}

// GetAgent returns the agent, or ErrNotFound.
func (db *DB) GetAgent(ctx context.Context, id string) (Agent, error) {
	a, err := scanAgent(db.read.QueryRowContext(ctx, db.agentQ().getAgent, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("reading agent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("reading agent %s: %w", id, err)
	}
	return a, nil
}

// ListAgents returns agents in ID order.
func (db *DB) ListAgents(ctx context.Context, afterID string, limit int) ([]Agent, error) {
	limit = listLimit(limit)
	return queryAll(ctx, db.read, "listing agents", db.agentQ().listAgent, []any{afterID, int64(limit)}, min(limit, 64), scanAgent)
}

// AgentsRevision returns the agent change counter.
func (db *DB) AgentsRevision(ctx context.Context) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, db.agentQ().revision).Scan(&n); err != nil {
		return 0, fmt.Errorf("reading agents revision: %w", err)
	}
	return n, nil
}

// jsonList encodes a list of strings as a JSON array, nil as [].
func jsonList(l []string) (string, error) {
	if l == nil {
		l = []string{}
	}
	b, err := json.Marshal(l)
	return string(b), err
}

// RecordAgentCertificate notes a certificate signed for an agent.
func (db *DB) RecordAgentCertificate(ctx context.Context, c AgentCertificate) error {
	if c.Serial == "" || c.AgentID == "" {
		return errors.New("recording agent certificate: serial and agent ID are required")
	}
	na, err := nanos(c.NotAfter)
	if err != nil || !na.Valid {
		return fmt.Errorf("recording agent certificate %s: bad expiry: %v", c.Serial, err)
	}
	res, err := db.write.ExecContext(ctx, db.agentQ().recordCert, c.Serial, c.AgentID, na)
	if err != nil {
		return fmt.Errorf("recording agent certificate %s: %w", c.Serial, err)
	}
	if err := expectOneRow(res); err != nil {
		return fmt.Errorf("recording agent certificate %s: %w", c.Serial, err)
	}
	db.commits.Add(1)
	return nil
}

// AgentCertificates returns the agent's certificates unexpired at validAt.
func (db *DB) AgentCertificates(ctx context.Context, agentID string, validAt time.Time) ([]AgentCertificate, error) {
	at, err := nanos(validAt)
	if err != nil {
		return nil, fmt.Errorf("listing agent certificates: %w", err)
	}
	return queryAll(ctx, db.read, "listing agent certificates", db.agentQ().listCerts, []any{agentID, at.Int64}, 16,
		func(r rowScanner) (AgentCertificate, error) {
			var c AgentCertificate
			var na int64
			if err := r.Scan(&c.Serial, &c.AgentID, &na); err != nil {
				return AgentCertificate{}, err
			}
			c.NotAfter = time.Unix(0, na).UTC()
			return c, nil
		})
}
