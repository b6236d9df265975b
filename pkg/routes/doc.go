// Package routes applies the gateway's desired routes and addresses to the
// kernel, puts back what something else deletes, and removes exactly what it
// made on teardown. It never takes over a route of another owner to the same
// destination; such a route is reported through Table.Problems.
//
// Routes live in the main table, tagged with Protocol, so they need no ip
// rule, forwarded traffic uses them as-is, and teardown (or a restarted
// gateway) finds every route it owns by protocol alone.
package routes
