package core

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tunnelmesh/tunnelmesh/pkg/broker/store"
)

// Outcomes of idempotent writes. A client sends each write with a random
// key (Idempotency-Key) and the same key on every retry; the broker
// records the answer of a write that changed something in the same
// transaction, so a retry after an answer that was lost (a timeout, an
// ambiguous store commit, a replica killed mid-write) gets the same answer
// instead of doing the write again. The store holds only a hash of the key
// and the answer sealed with a key derived from it: an answer that carries
// a secret (a join's credential, a new join token) is readable only by the
// one who sent the write.

// MinIdempotencyKey and MaxIdempotencyKey bound a key's length: 128 bits
// of randomness at least, as base64 or hex.
const (
	MinIdempotencyKey = 22
	MaxIdempotencyKey = 128
)

// CheckIdempotencyKey says what is wrong with a key, or nil.
func CheckIdempotencyKey(k string) error {
	if len(k) < MinIdempotencyKey || len(k) > MaxIdempotencyKey {
		return fmt.Errorf("Idempotency-Key must be %d to %d characters (at least 128 random bits)", MinIdempotencyKey, MaxIdempotencyKey)
	}
	for _, c := range k {
		if c <= ' ' || c > '~' {
			return errors.New("Idempotency-Key must be printable ASCII without spaces")
		}
	}
	return nil
}

func outcomeID(key string) string {
	h := sha256.Sum256([]byte("tunnelmesh outcome id\x00" + key))
	return hex.EncodeToString(h[:])
}

func outcomeAEAD(key string) cipher.AEAD {
	k := sha256.Sum256([]byte("tunnelmesh outcome seal\x00" + key))
	blk, _ := aes.NewCipher(k[:]) // a 32-byte key never fails
	aead, _ := cipher.NewGCM(blk)
	return aead
}

// outcome is one recorded answer.
type outcome struct {
	ID     string `json:"id"`     // outcomeID of the key
	Caller string `json:"caller"` // hash of the credential that sent the write
	Route  string `json:"route"`  // method and path
	Status int    `json:"status"`
	Sealed []byte `json:"sealed,omitempty"` // nonce and sealed body
}

func seal(key string, o *outcome, body []byte) {
	if body == nil {
		return
	}
	aead := outcomeAEAD(key)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	o.Sealed = aead.Seal(nonce, nonce, body, []byte(o.ID))
}

func unseal(key string, o *outcome) ([]byte, error) {
	if o.Sealed == nil {
		return nil, nil
	}
	aead := outcomeAEAD(key)
	if len(o.Sealed) < aead.NonceSize() {
		return nil, errors.New("recorded outcome is damaged")
	}
	n := aead.NonceSize()
	return aead.Open(nil, o.Sealed[:n], o.Sealed[n:], []byte(o.ID))
}

// outcomeRecordKey names one commit's outcomes; keys sort by time, so the
// oldest are pruned first.
func outcomeRecordKey(now time.Time) string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x-%x", now.UnixMilli(), r)
}

func recordTime(key string) (time.Time, bool) {
	ms, _, ok := strings.Cut(key, "-")
	var v int64
	if !ok || len(ms) != 16 {
		return time.Time{}, false
	}
	if _, err := fmt.Sscanf(ms, "%016x", &v); err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(v), true
}

// outcomeIndex holds the recorded outcomes: by record (one per commit) and
// by ID.
type outcomeIndex struct {
	records map[string][]string // record key -> IDs
	byID    map[string]*outcome
}

func newOutcomeIndex() outcomeIndex {
	return outcomeIndex{records: map[string][]string{}, byID: map[string]*outcome{}}
}

// decodeOutcomes decodes one outcome record (nil: deleted).
func decodeOutcomes(ch store.Change) ([]*outcome, error) {
	if ch.Value == nil {
		return nil, nil
	}
	var os []*outcome
	if err := json.Unmarshal(ch.Value, &os); err != nil {
		return nil, fmt.Errorf("decode outcome record %q: %w", ch.Key, err)
	}
	return os, nil
}

// set replaces a record's outcomes (nil: the record is deleted).
func (x *outcomeIndex) set(key string, os []*outcome) {
	for _, id := range x.records[key] {
		delete(x.byID, id)
	}
	delete(x.records, key)
	if os == nil {
		return
	}
	ids := make([]string, 0, len(os))
	for _, o := range os {
		x.byID[o.ID] = o
		ids = append(ids, o.ID)
	}
	x.records[key] = ids
}

// expired lists the records older than cutoff, oldest first.
func (x *outcomeIndex) expired(cutoff time.Time) []string {
	var out []string
	for k := range x.records {
		if t, ok := recordTime(k); !ok || t.Before(cutoff) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
