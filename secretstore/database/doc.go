// Package database is the secret store's database secrets engine: it
// keeps connections to managed databases (their admin credentials sealed
// under the barrier), dynamic roles that mint a database user per request
// under a lease, and static roles whose existing user's password it
// rotates.
//
// Leases are stored before the user they cover is created, so a crash
// never leaves a user Sigil does not know about; expired leases are
// revoked by ExpireDue, which the server runs on one node, and a lease
// whose revocation fails is kept and retried with backoff, never dropped.
// Password changes (static roles, the connection's own admin password)
// record the new password as pending before the database is changed and
// finish afterwards, so a crash at any point is repaired by Recover.
//
// It never logs, records or returns in an error a password or a DSN's
// password. Who may call it is decided by the caller (policies); what was
// done is recorded through Recorder before it is handed out.
package database
