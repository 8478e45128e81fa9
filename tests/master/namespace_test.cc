#include "namespace.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <leveldb/helpers/memenv.h>

#include "cluster.h"
#include "namespace_codec.h"

namespace cairn {
namespace {

class NamespaceTest : public ::testing::Test {
 protected:
  // kj's owners may throw from destructors; a test fixture must not.
  ~NamespaceTest() noexcept override {}
  NamespaceTest() : io(kj::setupAsyncIo()), env(leveldb::NewMemEnv(leveldb::Env::Default())) {
    open();
  }
  void open() {
    store = std::make_unique<NamespaceStore>("/ns", env.get());
    ns = std::make_unique<Namespace>(*store, clock, 1 << 20);
  }
  void reopen() {
    ns.reset();
    store.reset();
    open();
  }
  MutationResult run(kj::Promise<MutationResult> p) { return p.wait(io.waitScope); }
  Inode mkdir(uint64_t parent, const std::string& name) {
    auto r = run(ns->mkdir(parent, name, 0755, 1, 2));
    EXPECT_TRUE(r.status.ok()) << r.status.toString();
    return r.inode;
  }
  Inode create(uint64_t parent, const std::string& name) {
    auto r = run(ns->create(parent, name, 0644, 1, 2, 0, true));
    EXPECT_TRUE(r.status.ok()) << r.status.toString();
    return r.inode;
  }
  ErrorCode code(kj::Promise<MutationResult> p) { return run(kj::mv(p)).status.code(); }

  kj::AsyncIoContext io;
  std::unique_ptr<leveldb::Env> env;
  testing::FakeClock clock;
  std::unique_ptr<NamespaceStore> store;
  std::unique_ptr<Namespace> ns;
};

TEST_F(NamespaceTest, RootExists) {
  auto root = ns->getattr(ROOT_INODE);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root.value.type, InodeType::DIRECTORY);
  EXPECT_EQ(root.value.nlink, 2u);
}

TEST_F(NamespaceTest, MkdirCreateLookupResolve) {
  auto d = mkdir(ROOT_INODE, "dir");
  auto f = create(d.inode, "file");
  EXPECT_EQ(ns->lookup(ROOT_INODE, "dir").value.inode, d.inode);
  EXPECT_EQ(ns->resolve("/dir/file").value.inode, f.inode);
  EXPECT_EQ(ns->resolve("/dir/file").value.uid, 1u);
  EXPECT_EQ(ns->resolve("/dir/file").value.mode, 0644u);
  EXPECT_EQ(ns->getattr(ROOT_INODE).value.nlink, 3u);
  EXPECT_EQ(ns->resolve("/dir/missing").status.code(), ErrorCode::NOT_FOUND);
  EXPECT_EQ(ns->resolve("/dir/file/x").status.code(), ErrorCode::NOT_DIRECTORY);
  EXPECT_EQ(ns->resolve("relative").status.code(), ErrorCode::INVALID_ARGUMENT);
}

TEST_F(NamespaceTest, ErrorsChangeNothing) {
  auto d = mkdir(ROOT_INODE, "d");
  auto f = create(ROOT_INODE, "f");
  create(d.inode, "inner");
  uint64_t entriesBefore = store->lastLsn();
  EXPECT_EQ(code(ns->mkdir(ROOT_INODE, "d", 0755, 0, 0)), ErrorCode::ALREADY_EXISTS);
  EXPECT_EQ(code(ns->create(ROOT_INODE, "f", 0644, 0, 0, 0, true)), ErrorCode::ALREADY_EXISTS);
  EXPECT_EQ(code(ns->create(ROOT_INODE, "d", 0644, 0, 0, 0, false)), ErrorCode::IS_DIRECTORY);
  EXPECT_EQ(code(ns->mkdir(f.inode, "x", 0755, 0, 0)), ErrorCode::NOT_DIRECTORY);
  EXPECT_EQ(code(ns->mkdir(999, "x", 0755, 0, 0)), ErrorCode::NOT_FOUND);
  EXPECT_EQ(code(ns->rmdir(ROOT_INODE, "d")), ErrorCode::NOT_EMPTY);
  EXPECT_EQ(code(ns->rmdir(ROOT_INODE, "f")), ErrorCode::NOT_DIRECTORY);
  EXPECT_EQ(code(ns->unlink(ROOT_INODE, "d")), ErrorCode::IS_DIRECTORY);
  EXPECT_EQ(code(ns->unlink(ROOT_INODE, "nope")), ErrorCode::NOT_FOUND);
  for (std::string bad : std::vector<std::string>{"", ".", "..", "a/b", std::string("a\0b", 3)}) {
    EXPECT_EQ(code(ns->create(ROOT_INODE, bad, 0644, 0, 0, 0, true)), ErrorCode::INVALID_ARGUMENT)
        << bad;
    EXPECT_EQ(code(ns->mkdir(ROOT_INODE, bad, 0755, 0, 0)), ErrorCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(code(ns->create(ROOT_INODE, std::string(256, 'n'), 0644, 0, 0, 0, true)),
            ErrorCode::NAME_TOO_LONG);
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "f", ROOT_INODE, std::string(256, 'n'))),
            ErrorCode::NAME_TOO_LONG);
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "d", d.inode, "self")), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "f", ROOT_INODE, "d")), ErrorCode::IS_DIRECTORY);
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "d", ROOT_INODE, "f")), ErrorCode::NOT_DIRECTORY);
  EXPECT_EQ(code(ns->setReplication(f.inode, 0)), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(store->lastLsn(), entriesBefore);
  std::vector<Namespace::Entry> entries;
  bool more = false;
  ASSERT_TRUE(ns->readdir(ROOT_INODE, "", 100, entries, more).ok());
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "d");
  EXPECT_EQ(entries[1].name, "f");
}

TEST_F(NamespaceTest, RenameFilesAndDirectories) {
  auto a = mkdir(ROOT_INODE, "a");
  auto b = mkdir(ROOT_INODE, "b");
  auto sub = mkdir(a.inode, "sub");
  auto f = create(sub.inode, "f");
  // A directory moves with its subtree in one record change.
  ASSERT_TRUE(run(ns->rename(a.inode, "sub", b.inode, "moved")).status.ok());
  EXPECT_EQ(ns->resolve("/b/moved/f").value.inode, f.inode);
  EXPECT_EQ(ns->getattr(a.inode).value.nlink, 2u);
  EXPECT_EQ(ns->getattr(b.inode).value.nlink, 3u);
  // Moving a directory under its own descendant is refused.
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "b", sub.inode, "loop")), ErrorCode::INVALID_ARGUMENT);
  // A rename replaces an existing file, whose chunks are released.
  auto g = create(ROOT_INODE, "g");
  ASSERT_TRUE(ns->allocateChunk(g.inode, 0).wait(io.waitScope).ok());
  auto r = run(ns->rename(sub.inode, "f", ROOT_INODE, "g"));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.releasedHandles.size(), 1u);
  EXPECT_EQ(ns->resolve("/g").value.inode, f.inode);
  EXPECT_EQ(ns->getattr(g.inode).status.code(), ErrorCode::NOT_FOUND);
  // Renaming within one directory keeps its link count.
  ASSERT_TRUE(run(ns->rename(ROOT_INODE, "g", ROOT_INODE, "h")).status.ok());
  EXPECT_EQ(ns->resolve("/h").value.inode, f.inode);
  // A directory replaces an empty directory, not a full one.
  mkdir(ROOT_INODE, "empty");
  ASSERT_TRUE(run(ns->rename(ROOT_INODE, "a", ROOT_INODE, "empty")).status.ok());
  EXPECT_EQ(code(ns->rename(ROOT_INODE, "empty", ROOT_INODE, "b")), ErrorCode::NOT_EMPTY);
  EXPECT_EQ(ns->getattr(ROOT_INODE).value.nlink, 4u);  // . .. b empty
}

TEST_F(NamespaceTest, SetattrAndTruncateReleasesChunks) {
  auto f = create(ROOT_INODE, "f");
  for (uint32_t i = 0; i < 4; ++i)
    ASSERT_TRUE(ns->allocateChunk(f.inode, i).wait(io.waitScope).ok());
  ASSERT_TRUE(run(ns->commitSize(f.inode, 4 << 20, 0)).status.ok());
  SetAttrArgs args;
  args.size = (1 << 20) + 5;  // keeps chunks 0 and 1
  args.mode = 0600;
  args.mtimeNs = 123456789;
  auto r = run(ns->setattr(f.inode, args));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.releasedHandles.size(), 2u);
  EXPECT_EQ(ns->listChunks(f.inode, 0, 100).size(), 2u);
  EXPECT_EQ(r.inode.size, (1u << 20) + 5);
  EXPECT_EQ(r.inode.mode, 0600u);
  EXPECT_EQ(r.inode.mtimeNs, 123456789);
  // commitSize never shrinks a file.
  EXPECT_EQ(run(ns->commitSize(f.inode, 10, 0)).inode.size, (1u << 20) + 5);
}

TEST_F(NamespaceTest, UnlinkReleasesChunks) {
  auto f = create(ROOT_INODE, "f");
  ASSERT_TRUE(ns->allocateChunk(f.inode, 0).wait(io.waitScope).ok());
  ASSERT_TRUE(ns->allocateChunk(f.inode, 7).wait(io.waitScope).ok());
  auto r = run(ns->unlink(ROOT_INODE, "f"));
  ASSERT_TRUE(r.status.ok());
  EXPECT_EQ(r.releasedHandles.size(), 2u);
  EXPECT_TRUE(ns->allChunks().empty());
}

TEST_F(NamespaceTest, EverythingSurvivesReopen) {
  auto d = mkdir(ROOT_INODE, "d");
  auto f = create(d.inode, "f");
  auto chunk = ns->allocateChunk(f.inode, 3).wait(io.waitScope);
  ASSERT_TRUE(run(ns->setReplication(f.inode, 5)).status.ok());
  reopen();
  EXPECT_EQ(ns->resolve("/d/f").value.inode, f.inode);
  EXPECT_EQ(ns->resolve("/d/f").value.replication, 5);
  EXPECT_EQ(ns->getChunk(f.inode, 3)->handle, chunk.value.handle);
  // Counters continue, so no inode or handle is ever reused.
  auto g = create(d.inode, "g");
  EXPECT_GT(g.inode, f.inode);
  auto chunk2 = ns->allocateChunk(g.inode, 0).wait(io.waitScope);
  EXPECT_GT(chunk2.value.handle, chunk.value.handle);
  EXPECT_EQ(ns->chunkSize(), 1u << 20);
}

TEST_F(NamespaceTest, ReaddirPagesThroughLargeDirectories) {
  auto d = mkdir(ROOT_INODE, "big");
  // Enough entries that several pages are needed; all creates are in flight at once.
  const int n = 20000;
  kj::Vector<kj::Promise<MutationResult>> pending;
  for (int i = 0; i < n; ++i) {
    pending.add(ns->create(d.inode, "f" + std::to_string(i), 0644, 0, 0, 0, true));
  }
  for (auto& r : kj::joinPromises(pending.releaseAsArray()).wait(io.waitScope)) {
    ASSERT_TRUE(r.status.ok());
  }
  std::string after;
  size_t seen = 0;
  std::string last;
  for (;;) {
    std::vector<Namespace::Entry> page;
    bool more = false;
    ASSERT_TRUE(ns->readdir(d.inode, after, 4096, page, more).ok());
    for (auto& e : page) {
      EXPECT_GT(e.name, last);
      last = e.name;
    }
    seen += page.size();
    if (!more) break;
    after = page.back().name;
  }
  EXPECT_EQ(seen, static_cast<size_t>(n));
}

TEST_F(NamespaceTest, ReadsSeePendingMutationsAtOnce) {
  auto p = ns->mkdir(ROOT_INODE, "pending", 0755, 0, 0);
  // Not yet durable, but the next operation on the loop already sees it.
  EXPECT_TRUE(ns->lookup(ROOT_INODE, "pending").ok());
  EXPECT_EQ(code(ns->mkdir(ROOT_INODE, "pending", 0755, 0, 0)), ErrorCode::ALREADY_EXISTS);
  EXPECT_TRUE(p.wait(io.waitScope).status.ok());
}

TEST_F(NamespaceTest, SharedChunksAreReleasedOnceWithTheirLastOwner) {
  // A file with two chunks, a snapshot of it, and a second snapshot of the snapshot.
  auto f = create(ROOT_INODE, "f");
  std::vector<uint64_t> handles;
  for (uint32_t i = 0; i < 2; ++i) {
    auto c = ns->allocateChunk(f.inode, i).wait(io.waitScope);
    ASSERT_TRUE(c.ok());
    // Created on some chunkserver: no longer pending, so it may hold bytes.
    c.value.pending = false;
    ns->setChunkVersion(f.inode, c.value, false).wait(io.waitScope);
    handles.push_back(c.value.handle);
  }
  SnapshotRequest first;
  first.source = f.inode;
  first.parent = ROOT_INODE;
  first.name = "s1";
  auto s1 = run(ns->snapshot(first));
  ASSERT_TRUE(s1.status.ok()) << s1.status.toString();
  SnapshotRequest second;
  second.source = s1.inode.inode;
  second.parent = ROOT_INODE;
  second.name = "s2";
  ASSERT_TRUE(run(ns->snapshot(second)).status.ok());
  for (uint64_t h : handles) EXPECT_EQ(ns->ownersOf(h).size(), 3u);
  // Survives a restart (the lists are in the store).
  reopen();
  for (uint64_t h : handles) EXPECT_EQ(ns->ownersOf(h).size(), 3u);

  // All three go to the trash and expire in one mutation: each chunk released once.
  ns->setTrashPeriod(3600 * kj::SECONDS);
  for (auto name : {"f", "s1", "s2"}) ASSERT_TRUE(run(ns->unlink(ROOT_INODE, name)).status.ok());
  ns->setTrashPeriod(0 * kj::SECONDS);
  auto expired = run(ns->expireTrash());
  std::sort(expired.releasedHandles.begin(), expired.releasedHandles.end());
  EXPECT_EQ(expired.releasedHandles, handles);
  for (uint64_t h : handles) EXPECT_TRUE(ns->ownersOf(h).empty());
  EXPECT_TRUE(ns->allChunks().empty());
}

TEST_F(NamespaceTest, ARestoreFindsTheNewestOfItsPathWithOrWithoutTheIndex) {
  ns->setTrashPeriod(3600 * kj::SECONDS);
  auto d = mkdir(ROOT_INODE, "d");
  std::vector<uint64_t> versions;
  for (int i = 0; i < 3; ++i) {
    clock.set(1'700'000'000 + i);
    versions.push_back(create(d.inode, "f").inode);
    ASSERT_TRUE(run(ns->unlink(d.inode, "f")).status.ok());
  }
  create(d.inode, "g");
  ASSERT_TRUE(run(ns->unlink(d.inode, "g")).status.ok());
  // A trash from before the index: its entries by path are not there.
  Mutation legacy;
  for (auto& [key, value] : store->scan("T", "", 100)) legacy.del(key);
  ASSERT_EQ(legacy.ops.size(), 4u);
  store->commit(std::move(legacy)).wait(io.waitScope);
  auto restored = run(ns->restore("/d/f"));
  ASSERT_TRUE(restored.status.ok()) << restored.status.toString();
  EXPECT_EQ(restored.inode.inode, versions[2]);
  ASSERT_TRUE(run(ns->unlink(d.inode, "f")).status.ok());  // trashed again, indexed

  // The active master indexes the old entries once; a restore then reads its path's only.
  ns->indexTrash().wait(io.waitScope);
  EXPECT_EQ(store->scan("T", "", 100).size(), 4u);
  restored = run(ns->restore("/d/f"));
  EXPECT_EQ(restored.inode.inode, versions[2]);
  ASSERT_TRUE(run(ns->unlink(d.inode, "f")).status.ok());
  EXPECT_EQ(code(ns->restore("/d/nothing")), ErrorCode::NOT_FOUND);
  EXPECT_EQ(code(ns->restore("/d")), ErrorCode::NOT_FOUND);  // a prefix of a path is not it
  EXPECT_TRUE(run(ns->restore("/d/g")).status.ok());
  reopen();  // the index, and that it is complete, are in the store
  ns->setTrashPeriod(3600 * kj::SECONDS);
  EXPECT_EQ(run(ns->restore("/d/f")).inode.inode, versions[2]);
  EXPECT_EQ(run(ns->restore("/d/f")).status.code(), ErrorCode::ALREADY_EXISTS);
  ASSERT_TRUE(run(ns->unlink(d.inode, "f")).status.ok());
  // An entry by path whose trash entry went without it (a master without the index did
  // the restore): passed over, for the next newest.
  Mutation gone;
  for (auto& [key, value] : store->scan("t", "", 100)) {
    if (value == "/d/f" && codec::getBe(key, 9, 8) == versions[2]) gone.del(key);
  }
  ASSERT_EQ(gone.ops.size(), 1u);
  store->commit(std::move(gone)).wait(io.waitScope);
  EXPECT_EQ(run(ns->restore("/d/f")).inode.inode, versions[1]);
  ASSERT_TRUE(run(ns->unlink(d.inode, "f")).status.ok());
  // Expiry takes the entries by path with the others.
  ns->setTrashPeriod(0 * kj::SECONDS);
  clock.set(1'700'100'000);
  run(ns->expireTrash());
  EXPECT_TRUE(store->scan("t", "", 100).empty());
  EXPECT_TRUE(store->scan("T", "", 100).empty());
}

TEST_F(NamespaceTest, ASnapshotIsRefusedWhereItCannotGoAndChangesNothing) {
  auto d = mkdir(ROOT_INODE, "d");
  auto sub = mkdir(d.inode, "sub");
  create(sub.inode, "f");
  auto attempt = [&](uint64_t source, uint64_t parent, const std::string& name) {
    SnapshotRequest r;
    r.source = source;
    r.parent = parent;
    r.name = name;
    return run(ns->snapshot(r)).status.code();
  };
  EXPECT_EQ(attempt(d.inode, sub.inode, "inside"), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(attempt(d.inode, d.inode, "itself"), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(attempt(d.inode, ROOT_INODE, "d"), ErrorCode::ALREADY_EXISTS);
  EXPECT_EQ(attempt(d.inode, ROOT_INODE, "a/b"), ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(attempt(999, ROOT_INODE, "x"), ErrorCode::NOT_FOUND);
  // A file of the tree that may not be copied fails it all.
  SnapshotRequest denied;
  denied.source = d.inode;
  denied.parent = ROOT_INODE;
  denied.name = "copy";
  denied.mayCopy = [](const Inode& n) {
    return n.type == InodeType::REGULAR ? Status::permissionDenied("no") : Status::OK();
  };
  EXPECT_EQ(run(ns->snapshot(denied)).status.code(), ErrorCode::PERMISSION_DENIED);
  EXPECT_FALSE(ns->lookup(ROOT_INODE, "copy").ok());
  EXPECT_EQ(ns->getattr(ROOT_INODE).value.nlink, 3u);
}

}  // namespace
}  // namespace cairn
