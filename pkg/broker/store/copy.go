package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// CopyResult says what Copy wrote.
type CopyResult struct {
	Revision   int64
	Records    int
	LogEntries int
}

// Copy writes every record, the retained log and the revision of from into
// to, which must be empty (`broker migrate`: bbolt to etcd and back). It
// commits in chunks a shared store accepts (MaxChanges): first the log
// (whose changes also write records), then every current record over them,
// and the source's revision last. A copy cut short leaves a target Copy
// refuses next time: empty it and run again. No broker may write either
// store meanwhile.
func Copy(ctx context.Context, from, to Store) (CopyResult, error) {
	src, err := from.Load(ctx, 1<<31-1)
	if err != nil {
		return CopyResult{}, fmt.Errorf("read source: %w", err)
	}
	dst, err := to.Load(ctx, 1)
	if err != nil {
		return CopyResult{}, fmt.Errorf("read target: %w", err)
	}
	n := 0
	for _, m := range dst.Records {
		n += len(m)
	}
	if dst.Revision != 0 || n != 0 {
		return CopyResult{}, fmt.Errorf("the target store is not empty (revision %d, %d records): migrate only into a new store", dst.Revision, n)
	}
	chunk := 10000
	if l, ok := to.(interface{ MaxChanges() int }); ok {
		chunk = l.MaxChanges()
	}
	if chunk < 1 {
		return CopyResult{}, errors.New("target store accepts no changes per commit")
	}
	base := dst.Version
	commit := func(chs []Change, rev int64) error {
		v, err := to.Commit(ctx, base, chs, rev, 0)
		if err != nil {
			return fmt.Errorf("write target: %w", err)
		}
		base = v
		return nil
	}
	for i := 0; i < len(src.Log); i += chunk {
		part := src.Log[i:min(i+chunk, len(src.Log))]
		if err := commit(part, part[len(part)-1].Revision); err != nil {
			return CopyResult{}, err
		}
	}
	var records []Change
	for _, kind := range Kinds {
		keys := make([]string, 0, len(src.Records[kind]))
		for k := range src.Records[kind] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			records = append(records, Change{Kind: kind, Key: k, Value: src.Records[kind][k]})
		}
	}
	// Revision 0 (not logged) up to the last chunk, which sets the
	// source's revision.
	logRev := int64(0)
	if len(src.Log) > 0 {
		logRev = src.Log[len(src.Log)-1].Revision
	}
	for i := 0; i < len(records); i += chunk {
		part := records[i:min(i+chunk, len(records))]
		rev := logRev
		if i+chunk >= len(records) {
			rev = src.Revision
		}
		if err := commit(part, rev); err != nil {
			return CopyResult{}, err
		}
	}
	if len(records) == 0 {
		if err := commit(nil, src.Revision); err != nil {
			return CopyResult{}, err
		}
	}
	return CopyResult{Revision: src.Revision, Records: len(records), LogEntries: len(src.Log)}, nil
}
