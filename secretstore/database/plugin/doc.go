// Package plugin talks to the databases whose users the secret store
// manages: it creates, renews, revokes and re-passwords database users by
// running the operator's SQL statement templates against PostgreSQL (via
// pgx) or MySQL/MariaDB (via go-sql-driver/mysql). It also generates the
// names and passwords of dynamic users.
//
// It is a pure adapter. It stores nothing, knows nothing of HTTP, policies,
// leases or the audit log, and never decides who may do what: the secret
// store's database engine calls it after deciding, and records what it did.
//
// # Secrets
//
// It must never log, return or put into an error a user's password or the
// password of the connection's DSN. Errors from the drivers are rewritten
// (see [Error]) with every occurrence of the passwords involved replaced by
// "[redacted]", because a database may echo a failed statement (a syntax
// error "near" the password literal, say). [Config] redacts its DSN when
// printed or logged.
//
// # Statements and trust
//
// Statements are templates written by the operator and are trusted input:
// they are run as they are, with the privileges of the DSN's user. They name
// values with Vault's placeholders, spaces inside the braces optional:
//
//	{{name}} (or {{username}})  the user's name
//	{{password}}                 the user's password
//	{{expiration}}               the expiry, "2006-01-02 15:04:05-0700" in UTC; "infinity" for none
//
// An unknown placeholder, or one with no value in that kind of statement
// ({{password}} in a revocation, say), is refused before anything runs.
// Values are substituted as text, since DDL takes no bind parameters; what
// keeps them from changing a statement's meaning is that they are restricted
// to characters with no meaning inside a quoted SQL literal or identifier:
// names match [A-Za-z0-9_-] (no leading '-', no "--"), passwords
// [A-Za-z0-9_-] (16 to 128 of them). Anything else is refused with
// [ErrInvalidName] or [ErrInvalidPassword]. The expiration is made of digits,
// '-', ':', '+' and a space. Templates MUST put placeholders
// inside quotes: "{{name}}" for a PostgreSQL identifier, '{{name}}'@'%' and
// '{{password}}' for MySQL.
//
// On PostgreSQL each list element is sent whole with the simple query
// protocol, so it may hold several statements separated by ';', and DO
// blocks in dollar quotes; all the elements of one operation run in one
// transaction. MySQL takes one statement per query, so each element is split
// on the ';' that lie outside quotes and comments, and the parts run in
// order on one connection; DDL commits as it goes there, so a failed
// creation is cleaned up by running the revocation statements.
//
// A revoked user's open sessions are not ended: on PostgreSQL the default
// revocation takes its privileges away (DROP OWNED), on MySQL DROP USER
// leaves existing sessions running.
package plugin
