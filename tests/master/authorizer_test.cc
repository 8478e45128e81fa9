// The master's permission checks, called as the RPC service calls them: who may look up,
// read, write, create, remove, rename, chmod, chown and restore, by POSIX rules; and which
// credentials each kind of certificate gets.

#include "authorizer.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <leveldb/helpers/memenv.h>

#include "chunkserver_service.h"
#include "cluster.h"
#include "master.h"

namespace cairn {
namespace {

const Credentials ROOT = Credentials::root();
const Credentials ALICE{1000, {1000}};
const Credentials BOB{1001, {1001, 50}};  // also in group 50
const Credentials CAROL{1002, {1002}};

class AuthorizerTest : public ::testing::Test {
 protected:
  ~AuthorizerTest() noexcept override {}
  AuthorizerTest() : io(kj::setupAsyncIo()), env(leveldb::NewMemEnv(leveldb::Env::Default())) {
    MasterOptions o;
    o.dataDir = "/m";
    o.metaEnv = env.get();
    o.chunkSize = 1 << 20;
    o.trashPeriod = 3600 * kj::SECONDS;
    master = std::make_unique<Master>(o, io.provider->getTimer(), clock);
    auth = std::make_unique<Authorizer>(*master);
  }

  MutationResult run(kj::Promise<MutationResult> p) { return p.wait(io.waitScope); }
  ErrorCode code(kj::Promise<MutationResult> p) { return run(kj::mv(p)).status.code(); }
  Inode ok(kj::Promise<MutationResult> p) {
    auto r = run(kj::mv(p));
    EXPECT_TRUE(r.status.ok()) << r.status.toString();
    return r.inode;
  }
  Inode chmod(const Credentials& who, uint64_t inode, uint32_t mode) {
    SetAttrArgs a;
    a.mode = mode;
    return ok(auth->setattr(who, none, inode, a));
  }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> env;
  testing::FakeClock clock;
  std::unique_ptr<Master> master;
  std::unique_ptr<Authorizer> auth;
  OpenFiles none;
};

TEST_F(AuthorizerTest, ASecretFileInAPrivateDirectoryIsRoots) {
  Inode secret = ok(auth->mkdir(ROOT, ROOT_INODE, "secret", 0700));
  Inode key = ok(auth->create(ROOT, secret.inode, "key", 0600, 0, true, false));
  EXPECT_EQ(auth->resolve(ALICE, "/secret/key").status.code(), ErrorCode::PERMISSION_DENIED);
  // Not even whether a name exists leaks out of a directory one cannot search.
  EXPECT_EQ(auth->resolve(ALICE, "/secret/nothing").status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(auth->lookup(ALICE, secret.inode, "key").status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(code(auth->unlink(ALICE, secret.inode, "key")), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(auth->open(ALICE, key.inode, MAY_READ).status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(auth->mayReadChunks(ALICE, none, key.inode).code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(auth->mayWriteChunks(ALICE, none, key.inode).code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_TRUE(auth->resolve(ROOT, "/secret/key").ok());
  EXPECT_TRUE(auth->mayReadChunks(ROOT, none, key.inode).ok());

  // A file opened before its mode changed stays readable to that session (POSIX).
  chmod(ROOT, key.inode, 0644);
  ASSERT_TRUE(auth->open(ALICE, key.inode, MAY_READ).ok());
  OpenFiles session;
  session.byInode[key.inode] = {1, false};
  chmod(ROOT, key.inode, 0600);
  EXPECT_TRUE(auth->mayReadChunks(ALICE, session, key.inode).ok());
  EXPECT_EQ(auth->mayWriteChunks(ALICE, session, key.inode).code(), ErrorCode::PERMISSION_DENIED);
}

TEST_F(AuthorizerTest, OwnerGroupAndOtherBitsDecide) {
  chmod(ROOT, ROOT_INODE, 0777);
  Inode f = ok(auth->create(ALICE, ROOT_INODE, "f", 0640, 0, true, false));
  EXPECT_EQ(f.uid, ALICE.uid);
  EXPECT_EQ(f.gid, ALICE.gids[0]);
  SetAttrArgs group;
  group.gid = 50;
  // Alice is not in group 50: she cannot give the file to it.
  EXPECT_EQ(code(auth->setattr(ALICE, none, f.inode, group)), ErrorCode::NOT_PERMITTED);
  ok(auth->setattr(ROOT, none, f.inode, group));
  EXPECT_TRUE(auth->open(BOB, f.inode, MAY_READ).ok());  // group read
  EXPECT_EQ(auth->open(BOB, f.inode, MAY_WRITE).status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(auth->open(CAROL, f.inode, MAY_READ).status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_TRUE(auth->open(ALICE, f.inode, MAY_READ | MAY_WRITE).ok());

  // chmod only by the owner or root; chown to another user only by root.
  SetAttrArgs mode;
  mode.mode = 0666;
  EXPECT_EQ(code(auth->setattr(BOB, none, f.inode, mode)), ErrorCode::NOT_PERMITTED);
  SetAttrArgs give;
  give.uid = BOB.uid;
  EXPECT_EQ(code(auth->setattr(ALICE, none, f.inode, give)), ErrorCode::NOT_PERMITTED);
  EXPECT_EQ(ok(auth->setattr(ROOT, none, f.inode, give)).uid, BOB.uid);

  // Truncation needs write permission (or a session holding the file open for writing).
  SetAttrArgs cut;
  cut.size = 0;
  EXPECT_EQ(code(auth->setattr(CAROL, none, f.inode, cut)), ErrorCode::PERMISSION_DENIED);
  OpenFiles writer;
  writer.byInode[f.inode] = {1, true};
  ok(auth->setattr(CAROL, writer, f.inode, cut));
}

TEST_F(AuthorizerTest, CreatingAndRemovingNeedWriteAndSearchOnTheDirectory) {
  Inode pub = ok(auth->mkdir(ROOT, ROOT_INODE, "pub", 0755));
  EXPECT_EQ(code(auth->create(ALICE, pub.inode, "x", 0644, 0, true, false)),
            ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(code(auth->mkdir(ALICE, pub.inode, "d", 0755)), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(code(auth->symlink(ALICE, pub.inode, "l", "/x")), ErrorCode::PERMISSION_DENIED);
  Inode f = ok(auth->create(ROOT, pub.inode, "f", 0666, 0, true, false));
  // O_CREAT|O_EXCL of a name that exists is EEXIST, writable directory or not.
  EXPECT_EQ(code(auth->create(ALICE, pub.inode, "f", 0644, 0, true, true)),
            ErrorCode::ALREADY_EXISTS);
  // A world-writable file in a directory one cannot write: writable, not removable.
  EXPECT_TRUE(auth->open(ALICE, f.inode, MAY_WRITE).ok());
  EXPECT_EQ(code(auth->unlink(ALICE, pub.inode, "f")), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(code(auth->rename(ALICE, pub.inode, "f", ROOT_INODE, "g", false)),
            ErrorCode::PERMISSION_DENIED);
  // An existing file is opened through O_CREAT when it is writable.
  EXPECT_TRUE(run(auth->create(ALICE, pub.inode, "f", 0644, 0, false, true)).status.ok());
  chmod(ROOT, f.inode, 0644);
  EXPECT_EQ(code(auth->create(ALICE, pub.inode, "f", 0644, 0, false, true)),
            ErrorCode::PERMISSION_DENIED);
  // Device nodes are root's to make.
  chmod(ROOT, pub.inode, 0777);
  EXPECT_EQ(code(auth->mknod(ALICE, pub.inode, "dev", InodeType::CHAR_DEVICE, 0600, 0x0101)),
            ErrorCode::NOT_PERMITTED);
  ok(auth->mknod(ALICE, pub.inode, "fifo", InodeType::FIFO, 0600, 0));
}

TEST_F(AuthorizerTest, InAStickyDirectoryOnlyOwnersRemove) {
  Inode tmp = ok(auth->mkdir(ROOT, ROOT_INODE, "tmp", 0777));
  chmod(ROOT, tmp.inode, 01777);
  ok(auth->create(ALICE, tmp.inode, "alices", 0666, 0, true, false));
  EXPECT_EQ(code(auth->unlink(BOB, tmp.inode, "alices")), ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(code(auth->rename(BOB, tmp.inode, "alices", tmp.inode, "mine", false)),
            ErrorCode::PERMISSION_DENIED);
  // Nor replace it by a rename onto its name.
  ok(auth->create(BOB, tmp.inode, "bobs", 0666, 0, true, false));
  EXPECT_EQ(code(auth->rename(BOB, tmp.inode, "bobs", tmp.inode, "alices", false)),
            ErrorCode::PERMISSION_DENIED);
  EXPECT_TRUE(run(auth->unlink(ALICE, tmp.inode, "alices")).status.ok());
  EXPECT_TRUE(run(auth->unlink(ROOT, tmp.inode, "bobs")).status.ok());
}

TEST_F(AuthorizerTest, ASetgidDirectoryPassesItsGroupDown) {
  Inode shared = ok(auth->mkdir(ROOT, ROOT_INODE, "shared", 0775));
  SetAttrArgs a;
  a.gid = 50;
  a.mode = 02775;
  ok(auth->setattr(ROOT, none, shared.inode, a));
  Inode f = ok(auth->create(BOB, shared.inode, "f", 0644, 0, true, false));
  EXPECT_EQ(f.uid, BOB.uid);
  EXPECT_EQ(f.gid, 50u);
  Inode d = ok(auth->mkdir(BOB, shared.inode, "d", 0755));
  EXPECT_EQ(d.gid, 50u);
  EXPECT_TRUE(d.mode & MODE_SETGID);
  // Not a member of the directory's group: no entry.
  EXPECT_EQ(code(auth->create(ALICE, shared.inode, "g", 0644, 0, true, false)),
            ErrorCode::PERMISSION_DENIED);
}

TEST_F(AuthorizerTest, OnlyRootRestoresAnotherUsersTrash) {
  chmod(ROOT, ROOT_INODE, 0777);
  ok(auth->create(ALICE, ROOT_INODE, "a", 0644, 0, true, false));
  ok(auth->create(BOB, ROOT_INODE, "b", 0644, 0, true, false));
  ASSERT_TRUE(run(auth->unlink(ALICE, ROOT_INODE, "a")).status.ok());
  ASSERT_TRUE(run(auth->unlink(BOB, ROOT_INODE, "b")).status.ok());
  auto mine = auth->listTrash(ALICE, 100);
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].path, "/a");
  EXPECT_EQ(auth->listTrash(ROOT, 100).size(), 2u);
  EXPECT_EQ(code(auth->restore(ALICE, "/b")), ErrorCode::NOT_PERMITTED);
  EXPECT_TRUE(run(auth->restore(ALICE, "/a")).status.ok());
  EXPECT_TRUE(run(auth->restore(ROOT, "/b")).status.ok());
}

TEST_F(AuthorizerTest, TokensVerifyWithTheKeysSentAcrossManyRotations) {
  for (int i = 0; i < 10; ++i) {
    ChunkToken t = master->issueToken(9, 4, TokenMode::WRITE);
    int64_t now = (clock.now() - kj::UNIX_EPOCH) / kj::MILLISECONDS;
    // What a chunkserver holds after a heartbeat: every key the master has.
    EXPECT_TRUE(master->tokenKeys().verify(t, 9, 4, TokenMode::WRITE, now).ok()) << i;
    master->rotateTokenKeys();
    // A token made before the rotation still verifies with the keys after it.
    EXPECT_TRUE(master->tokenKeys().verify(t, 9, 4, TokenMode::READ, now).ok()) << i;
  }
}

TEST_F(AuthorizerTest, CertificatesDecideWhoCallsAre) {
  Identity user{Role::USER, "alice", 1000, {1000, 27}, false, true};
  auto u = credentialsFor(user, std::nullopt);
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u.value.uid, 1000u);
  EXPECT_EQ(u.value.gids, (std::vector<uint32_t>{1000, 27}));
  // A user may not claim to be another.
  EXPECT_EQ(credentialsFor(user, Credentials{0, {0}}).status.code(), ErrorCode::NOT_PERMITTED);
  EXPECT_TRUE(credentialsFor(user, Credentials{1000, {1000}}).ok());

  // A mount states each caller; root is squashed to nobody unless allowed.
  Identity mount{Role::MOUNT, "host1", NOBODY, {}, false, true};
  EXPECT_EQ(credentialsFor(mount, Credentials{1000, {1000}}).value.uid, 1000u);
  auto squashed = credentialsFor(mount, Credentials{0, {0}});
  EXPECT_EQ(squashed.value.uid, NOBODY);
  EXPECT_FALSE(squashed.value.isRoot());
  mount.allowRoot = true;
  EXPECT_TRUE(credentialsFor(mount, Credentials{0, {0}}).value.isRoot());

  // A worker acts for a job's submitter (root only if allowed), else as itself.
  Identity worker{Role::WORKER, "w1", 500, {500}, false, true};
  EXPECT_EQ(credentialsFor(worker, std::nullopt).value.uid, 500u);
  EXPECT_EQ(credentialsFor(worker, Credentials{1000, {1000}}).value.uid, 1000u);
  EXPECT_EQ(credentialsFor(worker, Credentials{0, {0}}).value.uid, NOBODY);

  // Admins are root; chunkservers and masters make no namespace calls.
  Identity admin{Role::ADMIN, "ops", 0, {0}, false, true};
  EXPECT_TRUE(credentialsFor(admin, std::nullopt).value.isRoot());
  EXPECT_TRUE(isAdmin(admin));
  EXPECT_FALSE(isAdmin(user));
  Identity cs{Role::CHUNKSERVER, "cs1", NOBODY, {}, false, true};
  EXPECT_EQ(credentialsFor(cs, std::nullopt).status.code(), ErrorCode::NOT_PERMITTED);
  EXPECT_FALSE(isAdmin(cs));
  // Without TLS (--insecure), callers are who they say.
  Identity anyone;
  EXPECT_EQ(credentialsFor(anyone, Credentials{5, {5}}).value.uid, 5u);
  EXPECT_TRUE(isAdmin(anyone));
}

}  // namespace
}  // namespace cairn

namespace cairn {
namespace {

// The retry cache, through the client service as a client calls it: a mutation sent twice
// with one request id is applied once, and the second answer is the first one's.
TEST_F(AuthorizerTest, AMutationSentTwiceWithOneRequestIdIsAppliedOnce) {
  Identity admin{Role::ADMIN, "admin", 0, {0}, false, true};
  wire::ClientService::Client svc = newClientService(*master, admin);
  auto create = [&](uint64_t seq) {
    auto req = svc.createRequest();
    req.setParent(ROOT_INODE);
    req.setName("once");
    req.setMode(0644);
    req.setExclusive(true);
    auto id = req.initRequestId();
    id.setClient(42);
    id.setSeq(seq);
    return req.send().wait(io.waitScope);
  };
  auto first = create(7);
  ASSERT_TRUE(fromWire(first.getStatus()).ok()) << fromWire(first.getStatus()).toString();
  auto again = create(7);
  ASSERT_TRUE(fromWire(again.getStatus()).ok()) << fromWire(again.getStatus()).toString();
  EXPECT_EQ(again.getAttr().getInode(), first.getAttr().getInode());
  // Another call of the same client is a new mutation: the name is taken.
  EXPECT_EQ(fromWire(create(8).getStatus()).code(), ErrorCode::ALREADY_EXISTS);

  auto unlink = [&](uint64_t seq) {
    auto req = svc.unlinkRequest();
    req.setParent(ROOT_INODE);
    req.setName("once");
    auto id = req.initRequestId();
    id.setClient(42);
    id.setSeq(seq);
    return fromWire(req.send().wait(io.waitScope).getStatus());
  };
  EXPECT_TRUE(unlink(9).ok());
  EXPECT_TRUE(unlink(9).ok());  // not notFound: it was this call, answered again
  EXPECT_EQ(unlink(10).code(), ErrorCode::NOT_FOUND);
  // Outcomes go after their time.
  clock.current = clock.current + 601 * kj::SECONDS;
  master->names().expireOutcomes(600 * kj::SECONDS).wait(io.waitScope);
  EXPECT_EQ(master->names().recordedOutcome(requestKey(42, 7)), std::nullopt);
}

// closeAll ends one open per inode listed, of this session only; a list past the bound is
// refused whole.
TEST_F(AuthorizerTest, ClosesSentTogetherEndOneOpenEach) {
  Identity admin{Role::ADMIN, "admin", 0, {0}, false, true};
  wire::ClientService::Client svc = newClientService(*master, admin);
  wire::ClientService::Client other = newClientService(*master, admin);
  uint64_t a = ok(auth->create(ROOT, ROOT_INODE, "a", 0644, 0, true, false)).inode;
  uint64_t b = ok(auth->create(ROOT, ROOT_INODE, "b", 0644, 0, true, false)).inode;
  auto open = [&](wire::ClientService::Client& s, uint64_t inode) {
    auto req = s.openRequest();
    req.setInode(inode);
    req.setAccess(4);
    ASSERT_TRUE(fromWire(req.send().wait(io.waitScope).getStatus()).ok());
  };
  auto closeAll = [&](std::vector<uint64_t> inodes) {
    auto req = svc.closeAllRequest();
    auto list = req.initInodes(static_cast<unsigned>(inodes.size()));
    for (size_t i = 0; i < inodes.size(); ++i) list.set(static_cast<unsigned>(i), inodes[i]);
    return fromWire(req.send().wait(io.waitScope).getStatus());
  };
  open(svc, a);
  open(svc, a);
  open(svc, b);
  open(other, b);
  std::vector<uint64_t> tooMany(4097, a);
  EXPECT_EQ(closeAll(tooMany).code(), ErrorCode::INVALID_ARGUMENT);
  EXPECT_TRUE(master->names().isOpen(a)) << "a refused list ends nothing";
  // b twice: this session held it once, so the second ends nothing (the other session's
  // open stays); a once: the second open stays.
  ASSERT_TRUE(closeAll({b, a, b, 999}).ok());
  EXPECT_TRUE(master->names().isOpen(a));
  EXPECT_TRUE(master->names().isOpen(b)) << "another session holds it";
  ASSERT_TRUE(closeAll({a}).ok());
  EXPECT_FALSE(master->names().isOpen(a));
}

// A mount's watcher as the master calls it: what it was told.
struct Told {
  std::vector<std::pair<uint64_t, std::string>> entries;
  std::vector<uint64_t> inodes;
  int all = 0, ended = 0, calls = 0;
  bool entry(uint64_t parent, const std::string& name) const {
    return std::count(entries.begin(), entries.end(), std::make_pair(parent, name)) > 0;
  }
  bool inode(uint64_t i) const { return std::count(inodes.begin(), inodes.end(), i) > 0; }
  void clear() { *this = Told{}; }
};

class RecordingWatcher final : public wire::Watcher::Server {
 public:
  explicit RecordingWatcher(Told& told, bool failing = false) : told(told), failing(failing) {}
  kj::Promise<void> changed(ChangedContext context) override {
    auto p = context.getParams();
    told.calls++;
    if (failing) return KJ_EXCEPTION(FAILED, "this watcher fails");
    for (auto e : p.getEntries()) told.entries.emplace_back(e.getParent(), e.getName().cStr());
    for (uint64_t i : p.getInodes()) told.inodes.push_back(i);
    if (p.getAll()) told.all++;
    return kj::READY_NOW;
  }
  kj::Promise<void> ended(EndedContext) override {
    told.ended++;
    return kj::READY_NOW;
  }

 private:
  Told& told;
  bool failing;
};

// A session that watches hears of every change another session makes to a name in a
// directory it was answered about, or to an inode's attributes it was given; never of its
// own changes, nor of what it was not answered about; and of the master's end as active.
TEST_F(AuthorizerTest, AWatchingSessionHearsOfOthersChangesToWhatItWasAnswered) {
  Identity admin{Role::ADMIN, "admin", 0, {0}, false, true};
  wire::ClientService::Client mount = newClientService(*master, admin);
  wire::ClientService::Client other = newClientService(*master, admin);
  Told told;
  auto watch = [&]() {
    auto req = mount.watchRequest();
    req.setWatcher(kj::heap<RecordingWatcher>(told));
    return fromWire(req.send().wait(io.waitScope).getStatus());
  };
  // Lets the master's calls to the watcher arrive.
  auto settle = [&]() {
    for (int i = 0; i < 20; ++i) kj::evalLater([]() {}).wait(io.waitScope);
  };
  auto lookup = [&](wire::ClientService::Client& s, uint64_t parent, const char* name) {
    auto req = s.lookupRequest();
    req.setParent(parent);
    req.setName(name);
    auto r = req.send().wait(io.waitScope);
    return fromWire(r.getStatus()).ok() ? r.getAttr().getInode() : 0;
  };
  auto create = [&](wire::ClientService::Client& s, uint64_t parent, const char* name) {
    auto req = s.createRequest();
    req.setParent(parent);
    req.setName(name);
    req.setMode(0644);
    auto r = req.send().wait(io.waitScope);
    EXPECT_TRUE(fromWire(r.getStatus()).ok()) << fromWire(r.getStatus()).toString();
    return r.getAttr().getInode();
  };
  auto chmodOn = [&](wire::ClientService::Client& s, uint64_t inode) {
    auto req = s.setattrRequest();
    req.setInode(inode);
    req.initSet().setSetMode(true);
    req.getSet().setMode(0600);
    ASSERT_TRUE(fromWire(req.send().wait(io.waitScope).getStatus()).ok());
  };
  uint64_t dir = ok(auth->mkdir(ROOT, ROOT_INODE, "d", 0755)).inode;

  ASSERT_TRUE(watch().ok());
  EXPECT_EQ(watch().code(), ErrorCode::ALREADY_EXISTS) << "a session watches once";
  EXPECT_EQ(lookup(mount, ROOT_INODE, "a"), 0u);  // missing: the root's names are watched
  uint64_t a = create(other, ROOT_INODE, "a");
  uint64_t b = create(other, dir, "b");  // in a directory the mount was not answered about
  settle();
  EXPECT_TRUE(told.entry(ROOT_INODE, "a"));
  EXPECT_FALSE(told.entry(dir, "b")) << "not answered about that directory";
  EXPECT_FALSE(told.inode(a)) << "not given its attributes";

  // Its own changes are not told back; what they touch is watched from then on.
  told.clear();
  uint64_t c = create(mount, ROOT_INODE, "c");
  settle();
  EXPECT_EQ(told.calls, 0);
  chmodOn(other, c);
  EXPECT_EQ(lookup(mount, dir, "b"), b);  // now the directory and b are answered about
  chmodOn(other, b);
  auto unlink = other.unlinkRequest();
  unlink.setParent(dir);
  unlink.setName("b");
  ASSERT_TRUE(fromWire(unlink.send().wait(io.waitScope).getStatus()).ok());
  settle();
  EXPECT_TRUE(told.inode(c));
  EXPECT_TRUE(told.inode(b));
  EXPECT_TRUE(told.entry(dir, "b"));
  EXPECT_EQ(told.all, 0);

  // A master that stops being the active one says so, and tells nothing after.
  master->watchers().endAll();
  settle();
  EXPECT_EQ(told.ended, 1);
  told.clear();
  create(other, ROOT_INODE, "e");
  settle();
  EXPECT_EQ(told.calls, 0);
}

// Past its bounds a session is told that anything may have changed (and what it was
// answered about starts anew): too much answered about, or too many changes queued while
// its watcher is slow.
TEST_F(AuthorizerTest, AWatchPastItsBoundsIsToldThatAllChanged) {
  Watchers watchers(Watchers::Limits{4, 3});
  Told told;
  auto w = watchers.add(kj::heap<RecordingWatcher>(told));
  auto settle = [&]() {
    for (int i = 0; i < 20; ++i) kj::evalLater([]() {}).wait(io.waitScope);
  };
  auto touch = [&](std::vector<uint64_t> inodes) {
    Mutation m;
    for (uint64_t i : inodes) m.put(inodeKey(i), "x");
    watchers.committed(m);
  };
  for (uint64_t i = 1; i <= 4; ++i) watchers.answeredInode(w.get(), i);
  touch({1, 2, 9});
  settle();
  EXPECT_EQ(told.inodes, (std::vector<uint64_t>{1, 2})) << "9 was never answered about";
  EXPECT_EQ(told.all, 0);
  // Four changes queued in one turn, past the bound of three: one "all".
  told.clear();
  touch({1, 2, 3, 4});
  settle();
  EXPECT_EQ(told.all, 1);
  EXPECT_TRUE(told.inodes.empty());
  // What it was answered about started anew: 1 is not told until answered again.
  told.clear();
  touch({1});
  settle();
  EXPECT_EQ(told.calls, 0);
  // Answered about more than four: "all" again.
  for (uint64_t i = 10; i <= 14; ++i) watchers.answeredInode(w.get(), i);
  settle();
  EXPECT_EQ(told.all, 1);
  // A session that ends is dropped.
  w.reset();
  touch({10});
  settle();
  EXPECT_EQ(watchers.watching(), 0u);
}

// A watcher that fails a call (its connection still up) is told the watch ended, and told
// nothing more: it must not go on trusting what it kept.
TEST_F(AuthorizerTest, AWatcherThatFailsACallIsToldTheWatchEnded) {
  Watchers watchers;
  Told told;
  auto w = watchers.add(kj::heap<RecordingWatcher>(told, true));
  auto settle = [&]() {
    for (int i = 0; i < 20; ++i) kj::evalLater([]() {}).wait(io.waitScope);
  };
  auto touch = [&](uint64_t inode) {
    Mutation m;
    m.put(inodeKey(inode), "x");
    watchers.committed(m);
  };
  watchers.answeredInode(w.get(), 1);
  touch(1);
  settle();
  EXPECT_EQ(told.calls, 1);
  EXPECT_EQ(told.ended, 1);
  watchers.answeredInode(w.get(), 1);
  touch(1);
  settle();
  EXPECT_EQ(told.calls, 1);
  EXPECT_EQ(told.ended, 1);
}

}  // namespace
}  // namespace cairn
