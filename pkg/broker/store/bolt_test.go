package store

import (
	"context"
	"fmt"
	"testing"
)

func TestBoltCommitLoadAndTrim(t *testing.T) {
	dir := t.TempDir()
	s, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for rev := int64(1); rev <= 10; rev++ {
		ch := []Change{
			{Revision: rev, Kind: KindExport, Key: fmt.Sprintf("e%d", rev), Value: []byte(`{"n":1}`)},
			{Kind: KindCredential, Key: "c", Value: []byte(fmt.Sprint(rev))},
		}
		if rev == 10 {
			ch = append(ch, Change{Revision: 11, Kind: KindExport, Key: "e1"}) // delete
		}
		last := rev
		if rev == 10 {
			last = 11
		}
		if _, err := s.Commit(ctx, 0, ch, last, 4); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenBolt(dir); err == nil {
		t.Fatal("a second open of the same store should fail while it is held")
	}
	s.Close()
	s, err = OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Load(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != 11 {
		t.Fatalf("revision %d, want 11", st.Revision)
	}
	if len(st.Records[KindExport]) != 9 || st.Records[KindExport]["e1"] != nil {
		t.Fatalf("exports: %v", st.Records[KindExport])
	}
	if string(st.Records[KindCredential]["c"]) != "10" {
		t.Fatalf("credential: %q", st.Records[KindCredential]["c"])
	}
	// The log keeps the newest 4 revisions (8..11), private changes excluded.
	var revs []int64
	for _, c := range st.Log {
		revs = append(revs, c.Revision)
	}
	if fmt.Sprint(revs) != "[8 9 10 11]" {
		t.Fatalf("log revisions %v, want [8 9 10 11]", revs)
	}
	if st.Log[3].Value != nil || st.Log[3].Key != "e1" {
		t.Fatalf("delete not logged: %+v", st.Log[3])
	}
	st, _ = s.Load(ctx, 2)
	if len(st.Log) != 2 || st.Log[0].Revision != 10 {
		t.Fatalf("limited load: %+v", st.Log)
	}
}
