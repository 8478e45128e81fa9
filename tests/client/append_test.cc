// Record append and O_APPEND against a whole cluster in this process (four chunkservers,
// 1 MiB chunks): records land whole at the end, never span chunks, never overwrite each
// other from many clients, and survive failing replicas at least once.

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "client.h"
#include "cluster.h"
#include "file_cache.h"
#include "record_io.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 1 << 20;

kj::ArrayPtr<const kj::byte> bytesOf(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

class AppendTest : public ::testing::Test {
 protected:
  ~AppendTest() noexcept override {}
  AppendTest() : io(kj::setupAsyncIo()), cluster(io, 4, CHUNK) {}
  Client& client() { return cluster.client(); }
  template <typename T>
  T wait(kj::Promise<T> p) {
    return p.wait(io.waitScope);
  }
  uint64_t createFile(const std::string& name) {
    auto r = wait(client().create(1, name, 0644, 3, true));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    return r.value.inode;
  }
  std::string readAll(uint64_t inode) {
    auto a = wait(client().getattr(inode));
    EXPECT_TRUE(a.ok());
    std::string out;
    Status s = wait(client().read(inode, 0, a.value.size, out));
    EXPECT_TRUE(s.ok()) << s.toString();
    return out;
  }
  // Every record of the file, duplicates kept, by id.
  std::map<std::pair<uint64_t, uint64_t>, std::vector<Record>> records(const std::string& file,
                                                                       RecordReader& reader) {
    std::map<std::pair<uint64_t, uint64_t>, std::vector<Record>> out;
    reader.feed(file, [&](const Record& r) { out[{r.writer, r.sequence}].push_back(r); });
    return out;
  }

  kj::AsyncIoContext io;
  testing::InProcessCluster cluster;
};

TEST_F(AppendTest, RecordsLandWholeAtTheEndAndNeverSpanChunks) {
  uint64_t inode = createFile("log");
  std::mt19937_64 rng(1);
  std::vector<std::pair<uint64_t, std::string>> landed;
  uint64_t end = 0;
  for (int i = 0; i < 24; ++i) {
    std::string rec(50'000 + rng() % (CHUNK / 4 - 50'000), static_cast<char>('a' + i));
    auto at = wait(client().append(inode, bytesOf(rec)));
    ASSERT_TRUE(at.ok()) << at.status.toString();
    // Right after the last one, unless it did not fit: then at the start of the next chunk.
    if (end % CHUNK + rec.size() <= CHUNK) {
      EXPECT_EQ(at.value, end) << "record " << i;
    } else {
      EXPECT_EQ(at.value, (end / CHUNK + 1) * CHUNK) << "record " << i;
    }
    EXPECT_EQ(at.value / CHUNK, (at.value + rec.size() - 1) / CHUNK) << "spans chunks";
    end = at.value + rec.size();
    landed.push_back({at.value, rec});
  }
  std::string file = readAll(inode);
  ASSERT_EQ(file.size(), end);
  std::string expected(end, '\0');  // padding reads as zeros
  for (auto& [at, rec] : landed) expected.replace(at, rec.size(), rec);
  EXPECT_TRUE(file == expected);

  // A record is 1 byte to a quarter of a chunk.
  EXPECT_EQ(wait(client().append(inode, bytesOf(std::string(CHUNK / 4 + 1, 'x')))).status.code(),
            ErrorCode::INVALID_ARGUMENT);
  EXPECT_EQ(wait(client().append(inode, bytesOf(""))).status.code(), ErrorCode::INVALID_ARGUMENT);
}

TEST_F(AppendTest, ARecordGoesAfterTheEndOfTheFileNotTheEndOfItsData) {
  uint64_t inode = createFile("grown");
  ASSERT_TRUE(wait(client().write(inode, 0, bytesOf("head"))).ok());
  ASSERT_TRUE(wait(client().commitSize(inode, 4)).ok());
  SetAttrRequest grow;
  grow.size = 5000;  // a hole at the end: the chunk holds 4 bytes
  ASSERT_TRUE(wait(client().setattr(inode, grow)).ok());
  auto at = wait(client().append(inode, bytesOf("tail")));
  ASSERT_TRUE(at.ok()) << at.status.toString();
  EXPECT_EQ(at.value, 5000u);
  EXPECT_EQ(readAll(inode).substr(4996), std::string(4, '\0') + "tail");
}

TEST_F(AppendTest, ManyClientsAppendingAtOnceNeverOverwriteEachOther) {
  uint64_t inode = createFile("shared");
  constexpr int CLIENTS = 4, EACH = 60;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < CLIENTS; ++i) clients.push_back(cluster.newClient());
  // Every record of every client in flight at once.
  std::vector<std::string> framed;
  std::vector<uint64_t> writerOf;
  for (int c = 0; c < CLIENTS; ++c) {
    RecordWriter w(static_cast<uint64_t>(c + 1));
    for (int i = 0; i < EACH; ++i) {
      std::string rec;
      w.frame(std::string(1000 + static_cast<size_t>(i * 997 % 30000), static_cast<char>('A' + c)),
              rec);
      framed.push_back(std::move(rec));
      writerOf.push_back(static_cast<uint64_t>(c));
    }
  }
  kj::Vector<kj::Promise<Result<uint64_t>>> calls;
  for (size_t i = 0; i < framed.size(); ++i) {
    calls.add(clients[writerOf[i]]->append(inode, bytesOf(framed[i])));
  }
  auto results = wait(kj::joinPromises(calls.releaseAsArray()));
  std::map<uint64_t, size_t> byOffset;
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status.toString();
    EXPECT_TRUE(byOffset.emplace(results[i].value, i).second) << "two records at one offset";
  }
  std::string file = readAll(inode);
  for (auto& [at, i] : byOffset) {
    ASSERT_LE(at + framed[i].size(), file.size());
    EXPECT_TRUE(file.compare(at, framed[i].size(), framed[i]) == 0) << "record at " << at;
  }
  RecordReader reader(false);
  auto found = records(file, reader);
  EXPECT_EQ(found.size(), framed.size());
  for (auto& [id, copies] : found) EXPECT_EQ(copies.size(), 1u) << "no faults: exactly once";
}

TEST_F(AppendTest, RecordsSurviveAFullSecondaryAndAStoppedChunkserverAtLeastOnce) {
  uint64_t inode = createFile("faulty");
  RecordWriter w;
  std::vector<std::string> framed;
  for (int i = 0; i < 120; ++i) {
    std::string rec;
    w.frame(std::string(20'000, static_cast<char>('a' + i % 26)), rec);
    framed.push_back(std::move(rec));
  }
  // The server of a replica of the chunk being appended to, by role.
  auto serverOf = [&](uint64_t end, bool primary) -> std::pair<size_t, uint32_t> {
    uint32_t index = static_cast<uint32_t>(end / CHUNK);
    auto l = wait(client().layout(inode, index, 1));
    EXPECT_TRUE(l.ok() && l.value.chunks.size() == 1);
    auto& c = l.value.chunks[0];
    for (auto& r : c.replicas) {
      if ((r.address == c.primary) != primary) continue;
      for (size_t i = 0; i < 4; ++i) {
        if (cluster.chunkserverAddress(i) == r.address) return {i, index};
      }
    }
    ADD_FAILURE() << "no such replica";
    return {0, index};
  };
  // A third of the way in, a secondary's disk fills up (its writes fail); two thirds in,
  // the primary stops answering.
  uint64_t end = 0;
  std::pair<size_t, uint32_t> full{0, 0};
  for (size_t i = 0; i < framed.size(); ++i) {
    if (i == 40) {
      full = serverOf(end, false);
      cluster.disk(full.first).setCapacity(0);
    }
    if (i == 80) cluster.stopChunkserver(serverOf(end, true).first);
    auto at = wait(client().append(inode, bytesOf(framed[i])));
    ASSERT_TRUE(at.ok()) << "record " << i << ": " << at.status.toString();
    end = at.value + framed[i].size();
  }
  // The full secondary failed a write and left that chunk's replicas.
  auto l = wait(client().layout(inode, full.second, 1));
  ASSERT_TRUE(l.ok() && l.value.chunks.size() == 1);
  for (auto& r : l.value.chunks[0].replicas) {
    EXPECT_NE(r.address, cluster.chunkserverAddress(full.first));
  }
  std::string file = readAll(inode);
  RecordReader reader(false);
  auto found = records(file, reader);
  EXPECT_EQ(found.size(), framed.size()) << "every acknowledged record is there";
  for (size_t i = 0; i < framed.size(); ++i) {
    auto it = found.find({w.writerId(), i + 1});
    ASSERT_NE(it, found.end()) << "record " << i;
    for (auto& r : it->second) {
      EXPECT_EQ(r.offset / CHUNK, (r.offset + framed[i].size() - 1) / CHUNK);
    }
  }
}

TEST_F(AppendTest, SyncGoesOnWithoutAReplicaThatIsGone) {
  // fsync after a chunkserver died (before the master calls it dead): the replica that
  // cannot sync leaves the chunk, and the others sync.
  uint64_t inode = createFile("synced");
  auto at = wait(client().append(inode, bytesOf(std::string(5000, 's'))));
  ASSERT_TRUE(at.ok()) << at.status.toString();
  auto l = wait(client().layout(inode, 0, 1));
  ASSERT_TRUE(l.ok() && l.value.chunks.size() == 1);
  std::string gone = l.value.chunks[0].replicas[0].address;
  for (size_t i = 0; i < 4; ++i) {
    if (cluster.chunkserverAddress(i) == gone) cluster.stopChunkserver(i);
  }
  Status s = wait(client().syncChunks(inode, {0}));
  ASSERT_TRUE(s.ok()) << s.toString();
  l = wait(client().layout(inode, 0, 1));
  ASSERT_TRUE(l.ok() && l.value.chunks.size() == 1);
  EXPECT_EQ(l.value.chunks[0].replicas.size(), 2u);
  for (auto& r : l.value.chunks[0].replicas) EXPECT_NE(r.address, gone);
  EXPECT_EQ(readAll(inode), std::string(5000, 's'));
}

TEST_F(AppendTest, OAppendWritesFromTwoClientsLandWholeAndOnce) {
  uint64_t inode = createFile("oappend");
  auto other = cluster.newClient();
  FileCache here(client()), there(*other);
  auto a = wait(here.open(inode, ACCESS_WRITE));
  auto b = wait(there.open(inode, ACCESS_WRITE));
  ASSERT_TRUE(a.ok() && b.ok());
  a.value->setAppend(true);
  b.value->setAppend(true);
  RecordWriter wa(1), wb(2);
  for (int i = 0; i < 400; ++i) {
    std::string ra, rb;
    wa.frame(std::string(3000 + static_cast<size_t>(i), 'a'), ra);
    wb.frame(std::string(5000 + static_cast<size_t>(i), 'b'), rb);
    // The offset is ignored: each write goes to the end of the file.
    ASSERT_TRUE(wait(a.value->write(0, ra)).ok());
    ASSERT_TRUE(wait(b.value->write(0, rb)).ok());
    if (i % 50 == 0) {
      ASSERT_TRUE(wait(a.value->flush()).ok());
    }
  }
  ASSERT_TRUE(wait(a.value->close()).ok());
  ASSERT_TRUE(wait(b.value->close()).ok());
  RecordReader reader(false);
  auto found = records(readAll(inode), reader);
  EXPECT_EQ(found.size(), 800u);
  for (auto& [id, copies] : found) EXPECT_EQ(copies.size(), 1u);
  // One writer's records land in the order written.
  uint64_t last = 0;
  for (auto& [id, copies] : found) {
    if (id.first != 1) continue;
    EXPECT_GT(copies[0].offset + 1, last);
    last = copies[0].offset + 1;
  }
}

TEST_F(AppendTest, NothingWrittenAfterAFailedOAppendPieceLandsBehindIt) {
  // An O_APPEND write larger than an append goes out in pieces. When one fails (the disks
  // fill up), neither its later pieces nor the writes queued behind it may land: they would
  // follow a gap. What landed is a start of what was written; once the writer has heard of
  // the failure, its next writes go out again.
  uint64_t inode = createFile("stream");
  FileCache cache(client());
  auto f = wait(cache.open(inode, ACCESS_WRITE));
  ASSERT_TRUE(f.ok()) << f.status.toString();
  f.value->setAppend(true);
  std::string head(4096, 'h');
  ASSERT_TRUE(wait(f.value->write(0, head)).ok());
  ASSERT_TRUE(wait(f.value->flush()).ok());
  // Room for one more 256 KiB piece and a little, on every disk.
  for (size_t i = 0; i < 4; ++i) {
    auto space = cluster.disk(i).space("/");
    ASSERT_TRUE(space.ok());
    uint64_t used = space.value.capacityBytes - space.value.freeBytes;
    cluster.disk(i).setCapacity(used + CHUNK / 4 + 128 * 1024);
  }
  std::string a(600 * 1024, 'a');
  std::string b(4096, 'b');
  ASSERT_TRUE(wait(f.value->write(0, a)).ok());
  Status wroteB = wait(f.value->write(0, b));
  Status flushed = wait(f.value->flush());
  EXPECT_EQ((wroteB.ok() ? flushed : wroteB).code(), ErrorCode::NO_SPACE)
      << wroteB.toString() << " / " << flushed.toString();
  std::string file = readAll(inode);
  ASSERT_GE(file.size(), head.size());
  EXPECT_EQ(file.substr(0, head.size()), head);
  std::string landed = file.substr(head.size());
  EXPECT_LT(landed.size(), a.size());
  EXPECT_TRUE(landed == a.substr(0, landed.size()))
      << "bytes landed after a gap: 'b' at " << static_cast<int64_t>(landed.find('b'));

  // Space again: the writer, told of the failure, appends again.
  for (size_t i = 0; i < 4; ++i) cluster.disk(i).setCapacity(uint64_t{1} << 40);
  std::string c(4096, 'c');
  ASSERT_TRUE(wait(f.value->write(0, c)).ok());
  ASSERT_TRUE(wait(f.value->close()).ok());
  file = readAll(inode);
  EXPECT_EQ(file.substr(file.size() - c.size()), c);
}

}  // namespace
}  // namespace cairn
