// Command go-peer is a scriptable Go participant for etcd-connector's interoperability tests.
//
// It runs etcd 3.4's own Go code (clientv3/concurrency, contrib/recipes, clientv3/naming as
// shipped by Debian's golang-etcd-server-dev) against --endpoints, reads one JSON command per
// stdin line and answers each with one JSON line on stdout (see README.md next to this file for
// the protocol). It is built offline in GOPATH mode by scripts/ensure-go-peer.sh.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
	recipe "go.etcd.io/etcd/contrib/recipes"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"go.uber.org/zap"
)

// request is one stdin line. Unknown fields are rejected so that a typo in a test fails loudly.
type request struct {
	ID        json.RawMessage `json:"id"`
	Cmd       string          `json:"cmd"`
	Path      string          `json:"path"`
	Value     string          `json:"value"`
	Priority  *uint16         `json:"priority"`
	Count     int             `json:"count"`
	TimeoutMs int64           `json:"timeoutMs"`
	Target    json.RawMessage `json:"target"`
	Addr      string          `json:"addr"`
	Key       string          `json:"key"`
	Metadata  interface{}     `json:"metadata"`
	WithLease bool            `json:"withLease"`
	Isolation string          `json:"isolation"`
	From      string          `json:"from"`
	To        string          `json:"to"`
	Amount    int64           `json:"amount"`
	PauseMs   int64           `json:"pauseMs"`
}

// result holds the command-specific fields of a response.
type result map[string]interface{}

// cmdError is an error with extra response fields (e.g. "locked": true for a failed trylock).
type cmdError struct {
	msg    string
	fields result
}

func (e *cmdError) Error() string { return e.msg }

const (
	// How long a recipe may take to return once its client is closed, before it is abandoned.
	abortGrace = 5 * time.Second
	// Deadline of the clean-up RPCs (deleting a cancelled waiter's key, revoking the lease).
	cleanupTimeout = 5 * time.Second
	dialTimeout    = 5 * time.Second
)

// pending is a command still running; cancel and timeouts go through it.
type pending struct {
	cmd    string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	reason string // why its context was cancelled: "cancel", "session.close", "shutdown"
}

func (p *pending) abort(reason string) {
	p.mu.Lock()
	if p.reason == "" {
		p.reason = reason
	}
	p.mu.Unlock()
	p.cancel()
}

func (p *pending) why() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// slot is this peer's state for one primitive (family + path): what it holds and whether a
// command is running on it. A peer holds at most one of each primitive per path, like one Go
// process with one session would.
type slot struct {
	busy string // the command running on it, "" when idle

	mutex    *concurrency.Mutex // held via mutex.lock
	tryKey   string             // held via mutex.trylock (hand-made TryLock, see tryLock)
	tryRev   int64
	election *concurrency.Election
	rw       *recipe.RWMutex
	rwMode   string // "read" or "write"
	db       *recipe.DoubleBarrier
	det      *detached // the dedicated client rw/db were built on
	key      string    // the key this peer holds (mutex, election, rwmutex, double barrier)
	lease    clientv3.LeaseID
}

func (s *slot) held() bool {
	return s.mutex != nil || s.tryKey != "" || s.election != nil || s.rw != nil || s.db != nil
}

type peer struct {
	endpoints []string
	ttl       int
	cli       *clientv3.Client
	rootCtx   context.Context
	rootStop  context.CancelFunc

	outMu        sync.Mutex
	shutdownOnce sync.Once

	sessMu sync.Mutex // serialises session creation and session.close
	mu     sync.Mutex // guards everything below
	sess   *concurrency.Session
	byID   map[string]*pending
	all    map[*pending]struct{}
	slots  map[string]*slot
}

func main() {
	endpointsFlag := flag.String("endpoints", "127.0.0.1:2379", "comma-separated etcd endpoints")
	ttl := flag.Int("ttl", 10, "session (lease) TTL in seconds")
	flag.Parse()

	p := &peer{
		ttl:   *ttl,
		byID:  map[string]*pending{},
		all:   map[*pending]struct{}{},
		slots: map[string]*slot{},
	}
	for _, e := range strings.Split(*endpointsFlag, ",") {
		if e = strings.TrimSpace(e); e != "" {
			p.endpoints = append(p.endpoints, e)
		}
	}
	p.rootCtx, p.rootStop = context.WithCancel(context.Background())

	if err := p.start(); err != nil {
		p.write(result{"ready": false, "error": err.Error()})
		os.Exit(1)
	}
	p.write(result{
		"ready": true, "pid": os.Getpid(), "lease": leaseHex(p.sess.Lease()), "ttl": p.ttl,
	})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		p.shutdown()
		os.Exit(0)
	}()

	p.readLoop(os.Stdin)
	// stdin EOF: the driver is gone or done. Revoke the lease so nothing this peer held lingers.
	p.shutdown()
}

func quietLog() *zap.Config {
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	c.Sampling = nil
	c.OutputPaths = []string{"stderr"}
	c.ErrorOutputPaths = []string{"stderr"}
	return &c
}

func (p *peer) newClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   p.endpoints,
		DialTimeout: dialTimeout,
		LogConfig:   quietLog(),
		Context:     p.rootCtx,
	})
}

func (p *peer) start() error {
	cli, err := p.newClient()
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", strings.Join(p.endpoints, ","), err)
	}
	p.cli = cli
	ctx, cancel := context.WithTimeout(p.rootCtx, 10*time.Second)
	defer cancel()
	if _, err := p.session(ctx); err != nil {
		return fmt.Errorf("creating the session: %w", err)
	}
	return nil
}

// write prints one JSON line. os.Stdout is unbuffered: the line is flushed by the one Write.
func (p *peer) write(r result) {
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(result{"ok": false, "error": "encoding the response: " + err.Error()})
	}
	p.outMu.Lock()
	defer p.outMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}

func (p *peer) readLoop(in io.Reader) {
	r := bufio.NewReaderSize(in, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if p.dispatch(line) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// dispatch starts one command; true means "quit".
func (p *peer) dispatch(line []byte) bool {
	var req request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	dec.UseNumber() // metadata numbers are re-encoded exactly as sent
	if err := dec.Decode(&req); err != nil {
		// Best effort to echo the id of a malformed command.
		var loose struct {
			ID  json.RawMessage `json:"id"`
			Cmd string          `json:"cmd"`
		}
		_ = json.Unmarshal(line, &loose)
		out := result{"ok": false, "error": "bad command: " + err.Error()}
		if len(loose.ID) > 0 {
			out["id"] = loose.ID
		}
		if loose.Cmd != "" {
			out["cmd"] = loose.Cmd
		}
		p.write(out)
		return false
	}

	switch req.Cmd {
	case "quit":
		p.shutdown()
		p.reply(&req, nil, result{}, nil, nil)
		return true
	case "cancel":
		// Synchronous, so that it is never stuck behind the command it cancels.
		target := idKey(req.Target)
		p.mu.Lock()
		pd := p.byID[target]
		p.mu.Unlock()
		if pd != nil {
			pd.abort("cancel")
		}
		p.reply(&req, nil, result{"found": pd != nil}, nil, nil)
		return false
	}

	ctx, pd, err := p.begin(&req)
	if err != nil {
		p.reply(&req, nil, nil, err, nil)
		return false
	}
	go func() {
		defer p.end(&req, pd)
		res, err := p.run(ctx, &req, pd)
		p.reply(&req, pd, res, err, ctx.Err())
	}()
	return false
}

func idKey(raw json.RawMessage) string { return string(bytes.TrimSpace(raw)) }

func (p *peer) begin(req *request) (context.Context, *pending, error) {
	ctx, cancel := context.WithCancel(p.rootCtx)
	if req.TimeoutMs > 0 {
		ctx, cancel = context.WithTimeout(p.rootCtx, time.Duration(req.TimeoutMs)*time.Millisecond)
	}
	pd := &pending{cmd: req.Cmd, cancel: cancel, done: make(chan struct{})}
	id := idKey(req.ID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if id != "" {
		if _, dup := p.byID[id]; dup {
			cancel()
			return nil, nil, fmt.Errorf("duplicate id %s: a command with this id is still running", id)
		}
		p.byID[id] = pd
	}
	p.all[pd] = struct{}{}
	return ctx, pd, nil
}

func (p *peer) end(req *request, pd *pending) {
	pd.cancel()
	p.mu.Lock()
	if id := idKey(req.ID); id != "" && p.byID[id] == pd {
		delete(p.byID, id)
	}
	delete(p.all, pd)
	p.mu.Unlock()
	close(pd.done)
}

// reply prints the response to req; ctxErr is the command context's error when it finished.
func (p *peer) reply(req *request, pd *pending, res result, err, ctxErr error) {
	out := result{}
	for k, v := range res {
		out[k] = v
	}
	if len(req.ID) > 0 {
		out["id"] = req.ID
	}
	out["cmd"] = req.Cmd
	if err == nil {
		out["ok"] = true
		p.write(out)
		return
	}
	out["ok"] = false
	out["error"] = err.Error()
	var ce *cmdError
	if errors.As(err, &ce) {
		for k, v := range ce.fields {
			out[k] = v
		}
	}
	if pd != nil && ctxErr != nil {
		if why := pd.why(); why != "" {
			out["cancelled"] = why
			out["error"] = fmt.Sprintf("%s: cancelled by %s", req.Cmd, why)
			out["cause"] = err.Error()
		} else if errors.Is(ctxErr, context.DeadlineExceeded) {
			out["cancelled"] = "timeout"
			out["error"] = fmt.Sprintf("%s: timeout after %d ms", req.Cmd, req.TimeoutMs)
			out["cause"] = err.Error()
		}
	}
	p.write(out)
}

// cancelledErr reports why ctx ended, for recipes whose own return value is meaningless once
// their client was closed underneath them.
func cancelledErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return context.Canceled
}

// ---------------------------------------------------------------------------------------------
// Session

// session returns the peer's one concurrency.Session, creating it (with --ttl) if there is none
// (at start, or after session.close). A session whose lease expired or was revoked by someone
// else is not replaced silently: commands fail until session.close.
func (p *peer) session(ctx context.Context) (*concurrency.Session, error) {
	p.sessMu.Lock()
	defer p.sessMu.Unlock()
	p.mu.Lock()
	s := p.sess
	p.mu.Unlock()
	if s != nil {
		select {
		case <-s.Done():
			return nil, fmt.Errorf("session lost: lease %s expired or was revoked (send session.close to start a new session)", leaseHex(s.Lease()))
		default:
			return s, nil
		}
	}
	type made struct {
		s   *concurrency.Session
		err error
	}
	ch := make(chan made, 1)
	go func() {
		s, err := concurrency.NewSession(p.cli, concurrency.WithTTL(p.ttl))
		ch <- made{s, err}
	}()
	select {
	case m := <-ch:
		if m.err != nil {
			return nil, m.err
		}
		p.mu.Lock()
		p.sess = m.s
		p.mu.Unlock()
		return m.s, nil
	case <-ctx.Done():
		go func() {
			if m := <-ch; m.s != nil {
				_ = m.s.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func leaseHex(id clientv3.LeaseID) string { return fmt.Sprintf("%x", int64(id)) }

// stopOthers aborts every running command but `self`, waits for them to finish (bounded), and
// forgets every primitive this peer held (closing their dedicated clients).
func (p *peer) stopOthers(self *pending, reason string) {
	p.mu.Lock()
	var others []*pending
	for pd := range p.all {
		if pd != self {
			others = append(others, pd)
		}
	}
	p.mu.Unlock()
	for _, pd := range others {
		pd.abort(reason)
	}
	deadline := time.After(abortGrace + cleanupTimeout)
	for _, pd := range others {
		select {
		case <-pd.done:
		case <-deadline:
		}
	}
	p.mu.Lock()
	slots := p.slots
	p.slots = map[string]*slot{}
	p.mu.Unlock()
	for _, sl := range slots {
		if sl.det != nil {
			sl.det.close()
		}
	}
}

// closeSession revokes the session's lease (deleting every key attached to it), bounded.
func (p *peer) closeSession() (string, bool, error) {
	p.mu.Lock()
	s := p.sess
	p.sess = nil
	p.mu.Unlock()
	if s == nil {
		return "", false, nil
	}
	ch := make(chan error, 1)
	go func() { ch <- s.Close() }()
	select {
	case err := <-ch:
		if err != nil && strings.Contains(err.Error(), "requested lease not found") {
			return leaseHex(s.Lease()), false, nil
		}
		return leaseHex(s.Lease()), err == nil, err
	case <-time.After(cleanupTimeout):
		return leaseHex(s.Lease()), false, errors.New("revoking the lease timed out")
	}
}

// shutdown aborts everything, revokes the lease and closes the client; once.
func (p *peer) shutdown() {
	p.shutdownOnce.Do(func() {
		p.stopOthers(nil, "shutdown")
		p.sessMu.Lock()
		_, _, _ = p.closeSession()
		p.sessMu.Unlock()
		p.rootStop()
		if p.cli != nil {
			_ = p.cli.Close()
		}
	})
}

// ---------------------------------------------------------------------------------------------
// Dedicated clients for recipes that take no context

// recordingKV wraps a client's KV for the recipes, which take no context: every call runs in
// ctx instead of their context.TODO(), so that cancelling ctx fails them at once (a closed
// client alone makes the client's retry loop spin for seconds). It also notes the keys written
// by successful transactions: the recipes create and claim keys in transactions but do not
// return their names.
type recordingKV struct {
	clientv3.KV
	ctx     context.Context
	mu      sync.Mutex
	puts    []string
	deletes []string
}

func (r *recordingKV) Put(_ context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	return r.KV.Put(r.ctx, key, val, opts...)
}

func (r *recordingKV) Get(_ context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	return r.KV.Get(r.ctx, key, opts...)
}

func (r *recordingKV) Delete(_ context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	return r.KV.Delete(r.ctx, key, opts...)
}

func (r *recordingKV) Do(_ context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	return r.KV.Do(r.ctx, op)
}

type recordingTxn struct {
	clientv3.Txn
	r     *recordingKV
	thens []clientv3.Op
	elses []clientv3.Op
}

func (r *recordingKV) Txn(_ context.Context) clientv3.Txn {
	return &recordingTxn{Txn: r.KV.Txn(r.ctx), r: r}
}

func (t *recordingTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *recordingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	t.thens = append(t.thens, ops...)
	return t
}

func (t *recordingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	t.elses = append(t.elses, ops...)
	return t
}

func (t *recordingTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil {
		ops := t.elses
		if resp.Succeeded {
			ops = t.thens
		}
		t.r.mu.Lock()
		for _, op := range ops {
			switch {
			case op.IsPut():
				t.r.puts = append(t.r.puts, string(op.KeyBytes()))
			case op.IsDelete():
				t.r.deletes = append(t.r.deletes, string(op.KeyBytes()))
			}
		}
		t.r.mu.Unlock()
	}
	return resp, err
}

func (r *recordingKV) recorded() (puts, deletes []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.puts...), append([]string(nil), r.deletes...)
}

// detached is a client of its own for one recipe call (or one held rwmutex / double barrier).
// contrib/recipes take no context, so the only way to abort a blocked recipe is to close the
// client under it: its watch channel closes and it returns.
type detached struct {
	cli    *clientv3.Client
	rec    *recordingKV
	sess   *concurrency.Session // the peer's lease, kept alive on this client too
	cancel context.CancelFunc   // ends rec.ctx
	once   sync.Once
}

func (p *peer) newDetached(main *concurrency.Session) (*detached, error) {
	cli, err := p.newClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(p.rootCtx)
	rec := &recordingKV{KV: cli.KV, ctx: ctx}
	cli.KV = rec
	d := &detached{cli: cli, rec: rec, cancel: cancel}
	if main != nil {
		// Same lease as the peer's session: the recipe's keys carry the peer's lease.
		s, err := concurrency.NewSession(cli, concurrency.WithLease(main.Lease()), concurrency.WithTTL(p.ttl))
		if err != nil {
			d.close()
			return nil, err
		}
		d.sess = s
	}
	return d, nil
}

func (d *detached) close() {
	d.once.Do(func() {
		d.cancel()
		if d.sess != nil {
			d.sess.Orphan() // stops this client's keep-alive; never revokes the shared lease
		}
		_ = d.cli.Close()
	})
}

type outcome struct {
	val string
	err error
}

// runAbortable runs a context-less recipe call; if ctx ends first it closes the dedicated
// client and waits (bounded) for the call to return. aborted tells the caller that the
// returned value is unreliable unless the call's effect is known to be real.
func runAbortable(ctx context.Context, d *detached, fn func() (string, error)) (o outcome, aborted bool) {
	ch := make(chan outcome, 1)
	go func() {
		defer func() {
			// Queue.Dequeue dereferences a nil event when its watch channel closes.
			if r := recover(); r != nil {
				ch <- outcome{err: fmt.Errorf("recipe panicked after its client was closed: %v", r)}
			}
		}()
		v, err := fn()
		ch <- outcome{v, err}
	}()
	select {
	case o := <-ch:
		return o, false
	case <-ctx.Done():
	}
	d.close()
	select {
	case o := <-ch:
		return o, true
	case <-time.After(abortGrace):
		return outcome{err: errors.New("recipe did not return after its client was closed")}, true
	}
}

// deleteKeys removes keys a cancelled or failed recipe call left behind, with the main client.
func (p *peer) deleteKeys(keys []string) {
	ctx, cancel := context.WithTimeout(p.rootCtx, cleanupTimeout)
	defer cancel()
	for _, k := range keys {
		_, _ = p.cli.Delete(ctx, k)
	}
}

// ---------------------------------------------------------------------------------------------
// Slots

func (p *peer) claim(family, path, cmd string) (*slot, error) {
	if path == "" {
		return nil, errors.New("path is required")
	}
	key := family + "\x00" + path
	p.mu.Lock()
	defer p.mu.Unlock()
	sl := p.slots[key]
	if sl == nil {
		sl = &slot{}
		p.slots[key] = sl
	}
	if sl.busy != "" {
		return nil, fmt.Errorf("busy: %s is still running on %s %q", sl.busy, family, path)
	}
	sl.busy = cmd
	return sl, nil
}

func (p *peer) unclaim(family, path string, sl *slot) {
	key := family + "\x00" + path
	p.mu.Lock()
	defer p.mu.Unlock()
	sl.busy = ""
	if !sl.held() && p.slots[key] == sl {
		delete(p.slots, key)
	}
}

// ---------------------------------------------------------------------------------------------
// Commands

func (p *peer) run(ctx context.Context, req *request, pd *pending) (result, error) {
	family := req.Cmd
	if i := strings.IndexByte(family, '.'); i >= 0 {
		family = family[:i]
	}
	switch family {
	case "mutex", "election", "rwmutex", "doublebarrier":
		if req.Cmd == "election.leader" {
			return p.electionLeader(ctx, req)
		}
		sl, err := p.claim(family, req.Path, req.Cmd)
		if err != nil {
			return nil, err
		}
		defer p.unclaim(family, req.Path, sl)
		switch req.Cmd {
		case "mutex.lock":
			return p.mutexLock(ctx, req, sl)
		case "mutex.trylock":
			return p.mutexTryLock(ctx, req, sl)
		case "mutex.unlock":
			return p.mutexUnlock(ctx, sl)
		case "mutex.cycles":
			return p.mutexCycles(ctx, req)
		case "election.campaign":
			return p.campaign(ctx, req, sl)
		case "election.proclaim":
			return p.proclaim(ctx, req, sl)
		case "election.resign":
			return p.resign(ctx, sl)
		case "rwmutex.rlock":
			return p.rwLock(ctx, req, sl, "read")
		case "rwmutex.lock":
			return p.rwLock(ctx, req, sl, "write")
		case "rwmutex.runlock":
			return p.rwUnlock(ctx, sl, "read")
		case "rwmutex.unlock":
			return p.rwUnlock(ctx, sl, "write")
		case "doublebarrier.enter":
			return p.dbEnter(ctx, req, sl)
		case "doublebarrier.leave":
			return p.dbLeave(ctx, sl)
		}
	case "barrier":
		return p.barrier(ctx, req)
	case "queue", "pqueue":
		return p.queue(ctx, req)
	case "endpoints":
		return p.endpointsCmd(ctx, req)
	case "stm":
		if req.Cmd == "stm.transfer" {
			return p.stmTransfer(ctx, req)
		}
	case "session":
		switch req.Cmd {
		case "session.info":
			return p.sessionInfo(ctx)
		case "session.close":
			return p.sessionClose(pd)
		}
	case "kv":
		if req.Cmd == "kv.cycles" {
			return p.kvCycles(ctx, req)
		}
	case "ping":
		return result{"pid": os.Getpid()}, nil
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

// --- mutex (clientv3/concurrency/mutex.go)

func (p *peer) mutexLock(ctx context.Context, req *request, sl *slot) (result, error) {
	if sl.held() {
		return nil, fmt.Errorf("already holds mutex %q (key %s)", req.Path, sl.key)
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, req.Path)
	// On a cancelled ctx, Lock deletes its own waiter key before returning.
	if err := m.Lock(ctx); err != nil {
		return nil, err
	}
	rev := ownerRev(m.IsOwner())
	sl.mutex, sl.key, sl.lease = m, m.Key(), s.Lease()
	return result{
		"key": m.Key(), "createRevision": rev, "revision": m.Header().Revision,
		"lease": leaseHex(s.Lease()),
	}, nil
}

// mutexCycles times `count` uncontended Lock+Unlock cycles of a Mutex on the peer's session
// (what `etcdctl lock` does once per run), measured here so no pipe is in the figures.
func (p *peer) mutexCycles(ctx context.Context, req *request) (result, error) {
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	return timedCycles(req.Count, func() func() error {
		m := concurrency.NewMutex(s, req.Path)
		return func() error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		}
	})
}

// timedCycles runs `count` cycles, each made by `prepare` untimed and then timed, and answers
// their times in ms as `samplesMs`.
func timedCycles(count int, prepare func() func() error) (result, error) {
	samples := make([]float64, 0, count)
	for i := 0; i < count; i++ {
		cycle := prepare()
		t0 := time.Now()
		if err := cycle(); err != nil {
			return nil, err
		}
		samples = append(samples, float64(time.Since(t0).Microseconds())/1000)
	}
	return result{"samplesMs": samples}, nil
}

// kvCycles times `count` pairs of plain writes, a put and a delete of `path`: the client's floor
// for a lock cycle (two writes), for the bench to set beside Node's.
func (p *peer) kvCycles(ctx context.Context, req *request) (result, error) {
	cycle := func() error {
		if _, err := p.cli.Put(ctx, req.Path, ""); err != nil {
			return err
		}
		_, err := p.cli.Delete(ctx, req.Path)
		return err
	}
	return timedCycles(req.Count, func() func() error { return cycle })
}

// ownerRev reads myRev out of Mutex.IsOwner(): Compare(CreateRevision(myKey), "=", myRev).
func ownerRev(c clientv3.Cmp) int64 {
	if t, ok := c.TargetUnion.(*pb.Compare_CreateRevision); ok {
		return t.CreateRevision
	}
	return -1
}

// mutexTryLock is etcd 3.5's Mutex.TryLock (3.4 has none), by hand: the same transaction as
// Lock's first step (tryAcquire), and if another session's key is older, delete ours and fail.
func (p *peer) mutexTryLock(ctx context.Context, req *request, sl *slot) (result, error) {
	if sl.held() {
		return nil, fmt.Errorf("already holds mutex %q (key %s)", req.Path, sl.key)
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	pfx := req.Path + "/"
	myKey := fmt.Sprintf("%s%x", pfx, s.Lease())
	cmp := clientv3.Compare(clientv3.CreateRevision(myKey), "=", 0)
	put := clientv3.OpPut(myKey, "", clientv3.WithLease(s.Lease()))
	get := clientv3.OpGet(myKey)
	getOwner := clientv3.OpGet(pfx, clientv3.WithFirstCreate()...)
	resp, err := p.cli.Txn(ctx).If(cmp).Then(put, getOwner).Else(get, getOwner).Commit()
	if err != nil {
		return nil, err
	}
	myRev := resp.Header.Revision
	if !resp.Succeeded {
		myRev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	owner := resp.Responses[1].GetResponseRange().Kvs
	if len(owner) == 0 || owner[0].CreateRevision == myRev {
		sl.tryKey, sl.tryRev, sl.key, sl.lease = myKey, myRev, myKey, s.Lease()
		return result{
			"key": myKey, "createRevision": myRev, "revision": resp.Header.Revision,
			"lease": leaseHex(s.Lease()),
		}, nil
	}
	if _, err := p.cli.Delete(ctx, myKey); err != nil {
		return nil, err
	}
	return nil, &cmdError{
		msg: "mutex: Locked by another session",
		fields: result{
			"locked": true, "holderKey": string(owner[0].Key),
			"holderCreateRevision": owner[0].CreateRevision,
		},
	}
}

func (p *peer) mutexUnlock(ctx context.Context, sl *slot) (result, error) {
	switch {
	case sl.mutex != nil:
		key := sl.mutex.Key()
		if err := sl.mutex.Unlock(ctx); err != nil {
			return nil, err
		}
		sl.mutex, sl.key = nil, ""
		return result{"key": key}, nil
	case sl.tryKey != "":
		key := sl.tryKey
		if _, err := p.cli.Delete(ctx, key); err != nil {
			return nil, err
		}
		sl.tryKey, sl.tryRev, sl.key = "", 0, ""
		return result{"key": key}, nil
	}
	return nil, errors.New("not locked by this peer")
}

// --- election (clientv3/concurrency/election.go)

func (p *peer) campaign(ctx context.Context, req *request, sl *slot) (result, error) {
	if sl.held() {
		return nil, fmt.Errorf("already campaigned on %q (key %s): resign first", req.Path, sl.key)
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	e := concurrency.NewElection(s, req.Path)
	// On a cancelled ctx, Campaign resigns (deletes its key) before returning.
	if err := e.Campaign(ctx, req.Value); err != nil {
		return nil, err
	}
	sl.election, sl.key, sl.lease = e, e.Key(), s.Lease()
	return result{
		"key": e.Key(), "createRevision": e.Rev(), "revision": e.Header().Revision,
		"lease": leaseHex(s.Lease()),
	}, nil
}

func (p *peer) proclaim(ctx context.Context, req *request, sl *slot) (result, error) {
	if sl.election == nil {
		return nil, concurrency.ErrElectionNotLeader
	}
	if err := sl.election.Proclaim(ctx, req.Value); err != nil {
		if errors.Is(err, concurrency.ErrElectionNotLeader) {
			sl.election, sl.key = nil, ""
		}
		return nil, err
	}
	return result{"key": sl.key, "revision": sl.election.Header().Revision}, nil
}

func (p *peer) resign(ctx context.Context, sl *slot) (result, error) {
	if sl.election == nil {
		return nil, errors.New("not campaigning on this path")
	}
	key := sl.key
	if err := sl.election.Resign(ctx); err != nil {
		return nil, err
	}
	sl.election, sl.key = nil, ""
	return result{"key": key}, nil
}

func (p *peer) electionLeader(ctx context.Context, req *request) (result, error) {
	if req.Path == "" {
		return nil, errors.New("path is required")
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := concurrency.NewElection(s, req.Path).Leader(ctx)
	if err != nil {
		if errors.Is(err, concurrency.ErrElectionNoLeader) {
			return nil, &cmdError{msg: err.Error(), fields: result{"noLeader": true}}
		}
		return nil, err
	}
	kv := resp.Kvs[0]
	return result{
		"key": string(kv.Key), "value": string(kv.Value), "createRevision": kv.CreateRevision,
		"modRevision": kv.ModRevision, "lease": leaseHex(clientv3.LeaseID(kv.Lease)),
	}, nil
}

// --- rwmutex (contrib/recipes/rwmutex.go)

func (p *peer) rwLock(ctx context.Context, req *request, sl *slot, mode string) (result, error) {
	if sl.held() {
		return nil, fmt.Errorf("already holds rwmutex %q (%s, key %s)", req.Path, sl.rwMode, sl.key)
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	d, err := p.newDetached(s)
	if err != nil {
		return nil, err
	}
	rw := recipe.NewRWMutex(d.sess, req.Path)
	o, aborted := runAbortable(ctx, d, func() (string, error) {
		if mode == "read" {
			return "", rw.RLock()
		}
		return "", rw.Lock()
	})
	puts, _ := d.rec.recorded()
	if aborted || o.err != nil {
		// A cancelled or failed waiter must not stay queued: delete its ephemeral key.
		d.close()
		p.deleteKeys(puts)
		if aborted {
			return nil, cancelledErr(ctx)
		}
		return nil, o.err
	}
	key := ""
	if len(puts) > 0 {
		key = puts[len(puts)-1]
	}
	sl.rw, sl.rwMode, sl.det, sl.key, sl.lease = rw, mode, d, key, s.Lease()
	return result{"key": key, "lease": leaseHex(s.Lease())}, nil
}

func (p *peer) rwUnlock(ctx context.Context, sl *slot, mode string) (result, error) {
	if sl.rw == nil || sl.rwMode != mode {
		return nil, fmt.Errorf("not %s-locked by this peer", mode)
	}
	rw, d, key := sl.rw, sl.det, sl.key
	o, aborted := runAbortable(ctx, d, func() (string, error) {
		if mode == "read" {
			return "", rw.RUnlock()
		}
		return "", rw.Unlock()
	})
	d.close()
	sl.rw, sl.rwMode, sl.det, sl.key = nil, "", nil, ""
	if aborted || o.err != nil {
		p.deleteKeys([]string{key})
		if aborted {
			return nil, cancelledErr(ctx)
		}
		return nil, o.err
	}
	return result{"key": key}, nil
}

// --- barrier (contrib/recipes/barrier.go)

func (p *peer) barrier(ctx context.Context, req *request) (result, error) {
	if req.Path == "" {
		return nil, errors.New("path is required")
	}
	d, err := p.newDetached(nil)
	if err != nil {
		return nil, err
	}
	defer d.close()
	b := recipe.NewBarrier(d.cli, req.Path)
	var fn func() error
	switch req.Cmd {
	case "barrier.hold":
		fn = b.Hold
	case "barrier.release":
		fn = b.Release
	case "barrier.wait":
		fn = b.Wait
	default:
		return nil, fmt.Errorf("unknown command %q", req.Cmd)
	}
	o, aborted := runAbortable(ctx, d, func() (string, error) { return "", fn() })
	if aborted && (req.Cmd == "barrier.wait" || o.err != nil) {
		// Wait returns nil when its watch channel closes: not a release.
		return nil, cancelledErr(ctx)
	}
	if o.err != nil {
		return nil, o.err
	}
	if req.Cmd == "barrier.hold" {
		puts, _ := d.rec.recorded()
		return result{"keys": puts}, nil
	}
	return result{}, nil
}

// --- double barrier (contrib/recipes/double_barrier.go)

func (p *peer) dbEnter(ctx context.Context, req *request, sl *slot) (result, error) {
	if sl.held() {
		return nil, fmt.Errorf("already entered double barrier %q (key %s)", req.Path, sl.key)
	}
	if req.Count <= 0 {
		return nil, errors.New("count (> 0) is required")
	}
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	d, err := p.newDetached(s)
	if err != nil {
		return nil, err
	}
	db := recipe.NewDoubleBarrier(d.sess, req.Path, req.Count)
	o, aborted := runAbortable(ctx, d, func() (string, error) { return "", db.Enter() })
	puts, _ := d.rec.recorded()
	if aborted || o.err != nil {
		// Enter has no way back: a cancelled (or too-many-clients) waiter's key is deleted here
		// so that it does not count towards the barrier.
		d.close()
		p.deleteKeys(puts)
		if aborted {
			return nil, cancelledErr(ctx)
		}
		return nil, o.err
	}
	key := ""
	if len(puts) > 0 {
		key = puts[0]
	}
	sl.db, sl.det, sl.key, sl.lease = db, d, key, s.Lease()
	return result{"key": key, "lease": leaseHex(s.Lease())}, nil
}

func (p *peer) dbLeave(ctx context.Context, sl *slot) (result, error) {
	if sl.db == nil {
		return nil, errors.New("not inside this double barrier")
	}
	db, d, key := sl.db, sl.det, sl.key
	o, aborted := runAbortable(ctx, d, func() (string, error) { return "", db.Leave() })
	d.close()
	sl.db, sl.det, sl.key = nil, nil, ""
	if aborted || o.err != nil {
		p.deleteKeys([]string{key})
		if aborted {
			return nil, cancelledErr(ctx)
		}
		return nil, o.err
	}
	return result{"key": key}, nil
}

// --- queues (contrib/recipes/queue.go, priority_queue.go)

func (p *peer) queue(ctx context.Context, req *request) (result, error) {
	if req.Path == "" {
		return nil, errors.New("path is required")
	}
	d, err := p.newDetached(nil)
	if err != nil {
		return nil, err
	}
	defer d.close()
	var fn func() (string, error)
	switch req.Cmd {
	case "queue.enqueue":
		q := recipe.NewQueue(d.cli, req.Path)
		fn = func() (string, error) { return "", q.Enqueue(req.Value) }
	case "queue.dequeue":
		fn = recipe.NewQueue(d.cli, req.Path).Dequeue
	case "pqueue.enqueue":
		if req.Priority == nil {
			return nil, errors.New("priority (0..65535) is required")
		}
		q := recipe.NewPriorityQueue(d.cli, req.Path)
		pr := *req.Priority
		fn = func() (string, error) { return "", q.Enqueue(req.Value, pr) }
	case "pqueue.dequeue":
		fn = recipe.NewPriorityQueue(d.cli, req.Path).Dequeue
	default:
		return nil, fmt.Errorf("unknown command %q", req.Cmd)
	}
	o, aborted := runAbortable(ctx, d, fn)
	puts, deletes := d.rec.recorded()
	if o.err != nil {
		if aborted {
			return nil, cancelledErr(ctx)
		}
		return nil, o.err
	}
	// Success stands even if ctx ended meanwhile: a dequeued item is consumed either way.
	if strings.HasSuffix(req.Cmd, ".enqueue") {
		key := ""
		for _, k := range puts {
			if !strings.HasPrefix(k, "__") {
				key = k
			}
		}
		return result{"key": key, "keys": puts}, nil
	}
	key := ""
	if len(deletes) > 0 {
		key = deletes[len(deletes)-1]
	}
	return result{"value": o.val, "key": key}, nil
}

// --- endpoints (clientv3/naming/endpoints: Debian's 3.4.23 replaces 3.4's GRPCResolver)

func (p *peer) endpointsCmd(ctx context.Context, req *request) (result, error) {
	if req.Path == "" {
		return nil, errors.New("path (the target) is required")
	}
	em, err := endpoints.NewManager(p.cli, req.Path)
	if err != nil {
		return nil, err
	}
	// 3.4's GRPCResolver.Update stored an endpoint at target + "/" + Addr.
	key := req.Key
	if key == "" && req.Addr != "" {
		key = req.Path + "/" + req.Addr
	}
	switch req.Cmd {
	case "endpoints.add":
		if key == "" {
			return nil, errors.New("addr (or key) is required")
		}
		var opts []clientv3.OpOption
		res := result{"key": key}
		if req.WithLease {
			s, err := p.session(ctx)
			if err != nil {
				return nil, err
			}
			opts = append(opts, clientv3.WithLease(s.Lease()))
			res["lease"] = leaseHex(s.Lease())
		}
		ep := endpoints.Endpoint{Addr: req.Addr, Metadata: req.Metadata}
		if err := em.AddEndpoint(ctx, key, ep, opts...); err != nil {
			return nil, err
		}
		return res, nil
	case "endpoints.delete":
		if key == "" {
			return nil, errors.New("addr (or key) is required")
		}
		if err := em.DeleteEndpoint(ctx, key); err != nil {
			return nil, err
		}
		return result{"key": key}, nil
	case "endpoints.list":
		eps, err := em.List(ctx)
		if err != nil {
			return nil, err
		}
		out := map[string]interface{}{}
		for k, ep := range eps {
			out[k] = result{"addr": ep.Addr, "metadata": ep.Metadata}
		}
		return result{"endpoints": out}, nil
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

// --- STM (clientv3/concurrency/stm.go)

var isolations = map[string]concurrency.Isolation{
	"":                      concurrency.SerializableSnapshot, // NewSTM's default
	"serializable-snapshot": concurrency.SerializableSnapshot,
	"SerializableSnapshot":  concurrency.SerializableSnapshot,
	"serializable":          concurrency.Serializable,
	"Serializable":          concurrency.Serializable,
	"repeatable-reads":      concurrency.RepeatableReads,
	"RepeatableReads":       concurrency.RepeatableReads,
	"read-committed":        concurrency.ReadCommitted,
	"ReadCommitted":         concurrency.ReadCommitted,
}

func (p *peer) stmTransfer(ctx context.Context, req *request) (result, error) {
	iso, ok := isolations[req.Isolation]
	if !ok {
		return nil, fmt.Errorf("unknown isolation %q (serializable-snapshot, serializable, repeatable-reads, read-committed)", req.Isolation)
	}
	if req.From == "" || req.To == "" || req.From == req.To {
		return nil, errors.New("from and to (two different keys) are required")
	}
	attempts := 0
	var fromV, toV int64
	apply := func(s concurrency.STM) error {
		attempts++
		var err error
		if fromV, err = balance(s.Get(req.From)); err != nil {
			return fmt.Errorf("%s: %w", req.From, err)
		}
		if toV, err = balance(s.Get(req.To)); err != nil {
			return fmt.Errorf("%s: %w", req.To, err)
		}
		if req.PauseMs > 0 && attempts == 1 {
			// Lets a test write a key this transaction read, forcing a conflict and a retry.
			select {
			case <-time.After(time.Duration(req.PauseMs) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if fromV < req.Amount {
			return &cmdError{
				msg:    fmt.Sprintf("insufficient funds: %s has %d, transfer of %d", req.From, fromV, req.Amount),
				fields: result{"insufficient": true},
			}
		}
		fromV -= req.Amount
		toV += req.Amount
		s.Put(req.From, strconv.FormatInt(fromV, 10))
		s.Put(req.To, strconv.FormatInt(toV, 10))
		return nil
	}
	resp, err := concurrency.NewSTM(p.cli, apply, concurrency.WithIsolation(iso), concurrency.WithAbortContext(ctx))
	if err != nil {
		var ce *cmdError
		if errors.As(err, &ce) {
			ce.fields["attempts"] = attempts
		}
		return nil, err
	}
	return result{
		"from": fromV, "to": toV, "attempts": attempts, "revision": resp.Header.Revision,
	}, nil
}

// balance parses an STM value: a missing key reads as "" (0).
func balance(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// --- session

func (p *peer) sessionInfo(ctx context.Context) (result, error) {
	s, err := p.session(ctx)
	if err != nil {
		return nil, err
	}
	ttl, err := p.cli.TimeToLive(ctx, s.Lease())
	if err != nil {
		return nil, err
	}
	return result{
		"lease": leaseHex(s.Lease()), "leaseDecimal": strconv.FormatInt(int64(s.Lease()), 10),
		"grantedTtl": ttl.GrantedTTL, "remainingTtl": ttl.TTL,
	}, nil
}

func (p *peer) sessionClose(self *pending) (result, error) {
	p.stopOthers(self, "session.close")
	p.sessMu.Lock()
	defer p.sessMu.Unlock()
	lease, revoked, err := p.closeSession()
	if err != nil {
		return nil, err
	}
	return result{"lease": lease, "revoked": revoked}, nil
}
