// FileCache's read-ahead against a whole cluster in this process (three chunkservers,
// 1 MiB chunks): a sequential reader gets every byte, each from the chunkservers once and
// in few reads; reads that arrive together (as from a kernel with a large read-ahead) wait
// for the segments on their way instead of asking again; a read past what was read ahead
// sees what another client appended since, and reads ahead there too; a write made while
// reads wait for their segment is read back; reading and writing in turn fetches no window
// after each write; a read that sends a write which fails leaves the failure to the
// writer; random reads, writes, growth and cuts mixed with sequential runs read what a
// model of the file holds; and a read-ahead that fails leaves the reader an error, not a
// hang.

#include <gtest/gtest.h>

#include <random>

#include "client.h"
#include "cluster.h"
#include "file_cache.h"

namespace cairn {
namespace {

constexpr uint64_t CHUNK = 1 << 20;
constexpr uint32_t KIB = 1 << 10;

class ReadAheadTest : public ::testing::Test {
 protected:
  ~ReadAheadTest() noexcept override {}
  ReadAheadTest() : io(kj::setupAsyncIo()), cluster(io, 3, CHUNK), cache(cluster.client()) {}
  Client& client() { return cluster.client(); }
  template <typename T>
  T wait(kj::Promise<T> p) {
    return p.wait(io.waitScope);
  }
  uint64_t put(const std::string& name, const std::string& data) {
    auto r = wait(client().create(1, name, 0644, 3, true));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    uint64_t inode = r.value.inode;
    Status s = wait(client().write(
        inode, 0, kj::arrayPtr(reinterpret_cast<const kj::byte*>(data.data()), data.size())));
    EXPECT_TRUE(s.ok()) << s.toString();
    EXPECT_TRUE(wait(client().commitSize(inode, data.size())).ok());
    return inode;
  }
  // A metric of all chunkservers together.
  double sum(const std::string& key) {
    double total = 0;
    for (size_t i = 0; i < 3; i++) {
      std::string text = cluster.chunkserver(i).metrics().render();
      size_t at = text.find("\n" + key + " ");
      if (at != std::string::npos) total += std::stod(text.substr(at + key.size() + 2));
    }
    return total;
  }
  // Bytes the chunkservers have sent to readers so far, and the reads they answered.
  double served() { return sum("cairn_chunkserver_read_bytes_total"); }
  double reads() {
    return sum("cairn_chunkserver_request_duration_seconds_count{method=\"read\"}");
  }
  // Another client writes `more` at `at`.
  void writeElsewhere(uint64_t inode, uint64_t at, const std::string& more) {
    auto other = cluster.newClient();
    ASSERT_TRUE(wait(other->write(
                         inode, at,
                         kj::arrayPtr(reinterpret_cast<const kj::byte*>(more.data()), more.size())))
                    .ok());
    ASSERT_TRUE(wait(other->commitSize(inode, at + more.size())).ok());
  }
  std::string mustRead(OpenFile& f, uint64_t offset, uint32_t size) {
    auto r = wait(f.read(offset, size));
    EXPECT_TRUE(r.ok()) << r.status.toString();
    return r.value;
  }

  kj::Own<OpenFile> open(uint64_t inode, int access = ACCESS_READ) {
    auto opened = wait(cache.open(inode, access));
    KJ_REQUIRE(opened.ok(), opened.status.toString());
    return kj::mv(opened.value);
  }

  kj::AsyncIoContext io;
  testing::InProcessCluster cluster;
  FileCache cache;
};

TEST_F(ReadAheadTest, ASequentialReaderGetsEveryByteFromTheChunkserversOnce) {
  std::string data = testing::randomBytes(10 * CHUNK + 12345, 1);
  uint64_t inode = put("f", data);
  auto f = open(inode);
  double before = served(), readsBefore = reads();
  std::string got;
  for (;;) {
    std::string piece = mustRead(*f, got.size(), 128 * KIB);
    got += piece;
    if (piece.size() < 128 * KIB) break;
  }
  EXPECT_TRUE(got == data) << "read " << got.size() << " bytes of " << data.size();
  // Once, but for the last read: a short read ends the reader's view of the file, so it
  // is asked again with a fresh layout (see Client::read).
  EXPECT_GE(served() - before, static_cast<double>(data.size()));
  EXPECT_LE(served() - before, static_cast<double>(data.size() + 128 * KIB));
  // In pieces of at most 1 MiB fetched ahead (a segment spans two chunks), not a
  // chunkserver read per read (82 of them).
  EXPECT_LE(reads() - readsBefore, 20.0);
  EXPECT_TRUE(wait(f->close()).ok());
}

TEST_F(ReadAheadTest, ReadsThatArriveTogetherWaitForTheSegmentsOnTheirWay) {
  std::string data = testing::randomBytes(12 * CHUNK, 2);
  uint64_t inode = put("f", data);
  auto f = open(inode);
  double before = served();
  // As a kernel with a 12 MiB read-ahead sends them: all at once, each 512 KiB, each
  // before the one before it is answered.
  std::vector<kj::Promise<Result<std::string>>> reads;
  for (uint64_t at = 0; at < data.size(); at += 512 * KIB) {
    reads.push_back(f->read(at, 512 * KIB));
  }
  for (size_t i = 0; i < reads.size(); i++) {
    auto r = wait(kj::mv(reads[i]));
    ASSERT_TRUE(r.ok()) << r.status.toString();
    EXPECT_TRUE(r.value == data.substr(i * 512 * KIB, 512 * KIB)) << "read " << i;
  }
  EXPECT_EQ(served() - before, static_cast<double>(data.size()));
  EXPECT_TRUE(wait(f->close()).ok());
}

TEST_F(ReadAheadTest, AReadPastWhatWasReadAheadSeesWhatAnotherClientAppended) {
  std::string data = testing::randomBytes(3 * CHUNK + 1000, 6);
  uint64_t inode = put("f", data);
  auto f = open(inode);
  // Read ahead to the end of the file as it was.
  for (uint64_t at = 0; at < 3 * CHUNK; at += 128 * KIB) {
    EXPECT_TRUE(mustRead(*f, at, 128 * KIB) == data.substr(at, 128 * KIB));
  }
  std::string more = testing::randomBytes(8 * CHUNK, 7);
  writeElsewhere(inode, data.size(), more);
  data += more;
  // And read ahead there too: each read past the size known at open is not its own fetch.
  double readsBefore = reads();
  for (uint64_t at = 3 * CHUNK; at < data.size(); at += 128 * KIB) {
    EXPECT_TRUE(mustRead(*f, at, 128 * KIB) == data.substr(at, 128 * KIB)) << at;
  }
  EXPECT_LE(reads() - readsBefore, 20.0);
  EXPECT_TRUE(wait(f->close()).ok());
}

TEST_F(ReadAheadTest, AWriteWhileReadsWaitForTheirSegmentIsReadBack) {
  std::string data = testing::randomBytes(4 * CHUNK, 8);
  uint64_t inode = put("f", data);
  auto f = open(inode, ACCESS_READ | ACCESS_WRITE);
  OpenFile& file = *f;
  EXPECT_TRUE(mustRead(file, 0, 128 * KIB) == data.substr(0, 128 * KIB));
  // Two reads wait for the segment after the first; a write lands in it meanwhile.
  auto p = file.read(128 * KIB, 128 * KIB);
  auto q = file.read(256 * KIB, 128 * KIB);
  std::string bytes(4 * KIB, 'x');
  ASSERT_TRUE(wait(file.write(CHUNK, bytes)).ok());
  data.replace(CHUNK, bytes.size(), bytes);
  auto pr = wait(kj::mv(p));
  auto qr = wait(kj::mv(q));
  ASSERT_TRUE(pr.ok() && qr.ok());
  EXPECT_TRUE(pr.value == data.substr(128 * KIB, 128 * KIB));
  EXPECT_TRUE(qr.value == data.substr(256 * KIB, 128 * KIB));
  EXPECT_TRUE(mustRead(file, CHUNK, 4 * KIB) == bytes);
  EXPECT_TRUE(mustRead(file, CHUNK - 64 * KIB, 256 * KIB) ==
              data.substr(CHUNK - 64 * KIB, 256 * KIB));
  EXPECT_TRUE(wait(file.close()).ok());
}

TEST_F(ReadAheadTest, ReadingAndWritingInTurnFetchesNoWindowAfterEachWrite) {
  std::string data = testing::randomBytes(8 * CHUNK, 9);
  uint64_t inode = put("f", data);
  auto f = open(inode, ACCESS_READ | ACCESS_WRITE);
  double before = served();
  // As a database updating pages in place: read one, write it back changed, next.
  for (uint64_t at = 0; at < 64 * 4 * KIB; at += 4 * KIB) {
    EXPECT_TRUE(mustRead(*f, at, 4 * KIB) == data.substr(at, 4 * KIB)) << at;
    std::string page(4 * KIB, static_cast<char>('a' + at / (4 * KIB) % 26));
    ASSERT_TRUE(wait(f->write(at, page)).ok());
    data.replace(at, page.size(), page);
  }
  EXPECT_TRUE(wait(f->close()).ok());
  // 256 KiB read; a read-ahead window (2 MiB or more) fetched again after each write
  // would be over 128 MiB.
  EXPECT_LE(served() - before, static_cast<double>(4 * CHUNK));
  std::string whole;
  ASSERT_TRUE(wait(client().read(inode, 0, data.size(), whole)).ok());
  EXPECT_TRUE(whole == data);
}

TEST_F(ReadAheadTest, AReadLeavesTheFailureOfAWriteToItsWriter) {
  std::string data = testing::randomBytes(CHUNK, 10);
  uint64_t inode = put("f", data);
  auto f = open(inode, ACCESS_READ | ACCESS_WRITE);
  for (size_t i = 0; i < 3; i++) cluster.disk(i).setCapacity(0);            // full: no new chunk
  ASSERT_TRUE(wait(f->write(3 * CHUNK, std::string(64 * KIB, 'x'))).ok());  // buffered
  // The read sends the write first, which fails; the reader still reads what is there.
  EXPECT_TRUE(mustRead(*f, 0, 4 * KIB) == data.substr(0, 4 * KIB));
  // The writer hears of it when it closes, as it would have without the read.
  Status closed = wait(f->close());
  EXPECT_FALSE(closed.ok());
}

TEST_F(ReadAheadTest, MixedReadsWritesAndCutsMatchAModel) {
  std::string model = testing::randomBytes(5 * CHUNK + 777, 3);
  uint64_t inode = put("f", model);
  auto f = open(inode, ACCESS_READ | ACCESS_WRITE);
  OpenFile& file = *f;
  std::mt19937_64 rng(4);
  auto below = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  auto check = [&](uint64_t offset, uint32_t size, const std::string& got) {
    std::string want = offset >= model.size() ? "" : model.substr(offset, size);
    EXPECT_TRUE(got == want) << "read of " << size << " at " << offset << ": " << got.size()
                             << " bytes, " << want.size() << " expected";
  };
  for (int op = 0; op < 150 && !HasFailure(); op++) {
    switch (below(6)) {
      case 0:
      case 1: {  // a sequential run, as a reader streaming part of the file
        uint64_t at = below(model.size());
        uint32_t size = static_cast<uint32_t>(4 * KIB << below(8));
        for (int i = 0, n = 1 + static_cast<int>(below(24)); i < n; i++, at += size) {
          check(at, size, mustRead(file, at, size));
        }
        break;
      }
      case 2: {  // several reads at once, out of order
        uint64_t at = below(model.size());
        std::vector<std::pair<uint64_t, kj::Promise<Result<std::string>>>> reads;
        for (int i = 0, n = 2 + static_cast<int>(below(6)); i < n; i++) {
          uint64_t offset = at + below(4 * CHUNK);
          reads.emplace_back(offset, file.read(offset, 256 * KIB));
        }
        for (auto& [offset, read] : reads) {
          auto r = wait(kj::mv(read));
          ASSERT_TRUE(r.ok()) << r.status.toString();
          check(offset, 256 * KIB, r.value);
        }
        break;
      }
      case 3: {  // a random read, past the end at times
        uint64_t at = below(model.size() + 64 * KIB);
        uint32_t size = static_cast<uint32_t>(1 + below(300 * KIB));
        check(at, size, mustRead(file, at, size));
        break;
      }
      case 4: {  // a write, growing the file at times
        uint64_t at = below(model.size() + 100 * KIB);
        std::string bytes = testing::randomBytes(1 + below(700 * KIB), rng());
        ASSERT_TRUE(wait(file.write(at, bytes)).ok());
        if (model.size() < at) model.resize(at, '\0');
        model.replace(at, std::min(bytes.size(), model.size() - at), bytes);
        if (below(2) == 0) {
          ASSERT_TRUE(wait(file.flush()).ok());
        }
        break;
      }
      case 5: {  // a cut, then growth through the hole
        ASSERT_TRUE(wait(file.flush()).ok());
        uint64_t size = below(model.size());
        SetAttrRequest cut;
        cut.size = size;
        auto r = wait(cache.setattr(inode, cut));
        ASSERT_TRUE(r.ok()) << r.status.toString();
        model.resize(size);
        break;
      }
    }
  }
  ASSERT_TRUE(wait(file.flush()).ok());
  std::string whole;
  ASSERT_TRUE(wait(client().read(inode, 0, model.size() + 1, whole)).ok());
  EXPECT_TRUE(whole == model);
  EXPECT_TRUE(wait(file.close()).ok());
}

TEST_F(ReadAheadTest, AReadAheadThatFailsLeavesTheReaderAnError) {
  std::string data = testing::randomBytes(8 * CHUNK, 5);
  uint64_t inode = put("f", data);
  auto quick = cluster.newClient([](ClientOptions& o) {
    o.retryFor = 300 * kj::MILLISECONDS;
    o.rpcTimeout = 1 * kj::SECONDS;
  });
  FileCache quickCache(*quick);
  auto opened = wait(quickCache.open(inode));
  ASSERT_TRUE(opened.ok()) << opened.status.toString();
  OpenFile& file = *opened.value;
  EXPECT_TRUE(mustRead(file, 0, 128 * KIB) == data.substr(0, 128 * KIB));
  // The second read starts the read-ahead; it waits for the first segment.
  auto pending = file.read(128 * KIB, 128 * KIB);
  for (size_t i = 0; i < 3; i++) cluster.stopChunkserver(i);
  auto r = wait(kj::mv(pending));
  EXPECT_FALSE(r.ok());
  auto again = wait(file.read(4 * CHUNK, 128 * KIB));
  EXPECT_FALSE(again.ok());
  wait(file.abort());
}

}  // namespace
}  // namespace cairn
