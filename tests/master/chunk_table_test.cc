// The chunk manager's compact containers (master/chunk_table.h) against the standard ones:
// long random sequences of operations with a fixed seed, the whole contents compared with a
// std::set / std::map model as they go, and the edges (growth and shrinking, moves, ids and
// keys at the ends of their range, entries that must stay at their address).

#include "chunk_table.h"

#include <gtest/gtest.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <vector>

namespace cairn {
namespace {

// ---------------------------------------------------------------------------------------
// ReplicaSet

std::vector<uint64_t> listOf(const std::set<uint64_t>& s) { return {s.begin(), s.end()}; }

std::string show(const std::vector<uint64_t>& v) {
  std::ostringstream out;
  out << "{";
  for (size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << v[i];
  out << "}";
  return out.str();
}

// Puts `ids` in both the set and its model.
void insertBoth(ReplicaSet& r, std::set<uint64_t>& model, std::initializer_list<uint64_t> ids) {
  for (uint64_t id : ids) {
    r.insert(id);
    model.insert(id);
  }
}

// Puts `n` ids, first + i * step, in both.
void fillBoth(ReplicaSet& r, std::set<uint64_t>& model, size_t n, uint64_t first, uint64_t step) {
  for (size_t i = 0; i < n; ++i) insertBoth(r, model, {first + i * step});
}

::testing::AssertionResult sameAs(const ReplicaSet& r, const std::set<uint64_t>& model) {
  std::vector<uint64_t> walked;
  for (uint32_t id : r) walked.push_back(id);
  std::vector<uint64_t> want = listOf(model);
  if (r.size() != model.size() || r.empty() != model.empty() || walked != want ||
      r.toVector() != want || static_cast<size_t>(r.end() - r.begin()) != model.size()) {
    return ::testing::AssertionFailure()
           << "size " << r.size() << ", iteration " << show(walked) << ", toVector "
           << show(r.toVector()) << "; want " << show(want);
  }
  for (uint64_t id : model) {
    if (!r.count(id)) return ::testing::AssertionFailure() << "count(" << id << ") is false";
  }
  return ::testing::AssertionSuccess();
}

ReplicaSet filled(const std::vector<uint64_t>& ids) {
  ReplicaSet r;
  for (uint64_t id : ids) r.insert(id);
  return r;
}

TEST(ReplicaSetTest, RandomOperationsMatchStdSet) {
  std::mt19937_64 rng(0x5eed0001);
  ReplicaSet r;
  std::set<uint64_t> model;
  // Each phase draws ids from its own alphabet: a small one keeps the set inline or just
  // past it, a larger one takes it past 6, 12, 24 and 48 on the heap; phases that favour
  // erasing shrink it back.
  const size_t kAlphabet[] = {4, 8, 2, 16, 40, 100, 7, 13, 60, 3};
  size_t largest = 0;
  for (int phase = 0; phase < 40; ++phase) {
    std::vector<uint64_t> ids;
    size_t n = kAlphabet[phase % std::size(kAlphabet)];
    for (size_t i = 0; i < n; ++i) {
      switch (rng() % 4) {
        case 0:  // small ids
          ids.push_back(rng() % 16);
          break;
        case 1:  // near the top
          ids.push_back(UINT32_MAX - rng() % 16);
          break;
        default:  // anywhere
          ids.push_back(static_cast<uint32_t>(rng()));
      }
    }
    unsigned insertPercent = phase % 2 == 0 ? 70 : 35;
    for (int op = 0; op < 5000; ++op) {
      uint64_t id = ids[rng() % ids.size()];
      unsigned dice = rng() % 100;
      if (dice < insertPercent) {
        ASSERT_EQ(r.insert(id), model.insert(id).second) << "insert " << id;
      } else if (dice < 90) {
        ASSERT_EQ(r.erase(id), model.erase(id) == 1) << "erase " << id;
      } else if (dice < 96) {
        ASSERT_EQ(r.count(id), model.count(id) == 1) << "count " << id;
      } else if (dice < 98) {
        // Above 32 bits: never there, whatever the low bits.
        uint64_t wide = id + (uint64_t{1 + rng() % 7} << 32);
        ASSERT_FALSE(r.count(wide)) << wide;
        ASSERT_FALSE(r.erase(wide)) << wide;
      } else if (dice < 99) {
        // Through a move construction and a move assignment and back.
        ReplicaSet moved(std::move(r));
        ASSERT_TRUE(r.empty());
        ASSERT_TRUE(sameAs(moved, model));
        r = std::move(moved);
        ASSERT_TRUE(moved.empty());
      } else if (rng() % 50 == 0) {
        r.clear();
        model.clear();
      }
      ASSERT_TRUE(sameAs(r, model)) << "phase " << phase << " op " << op;
      largest = std::max(largest, model.size());
    }
  }
  EXPECT_GT(largest, 24u);  // the sequence did take it well onto the heap
}

TEST(ReplicaSetTest, GrowsPastInlineAndShrinksBack) {
  // Ascending, descending and alternating (front, back, middle) insertion orders, to sizes
  // on either side of 3, 6, 12 and 24 (the capacities), then erasure from the front, the
  // back and the middle down to empty, and a refill of the same (now heap-backed) set.
  std::mt19937_64 rng(0x5eed0002);
  for (size_t n : {1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 23, 24, 25, 30, 49, 100}) {
    for (int order = 0; order < 3; ++order) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " order " << order);
      std::vector<uint64_t> ids;
      for (size_t i = 0; i < n; ++i) ids.push_back(10 * i + 5);
      if (order == 1) std::reverse(ids.begin(), ids.end());
      if (order == 2) {
        std::vector<uint64_t> zigzag;
        for (size_t lo = 0, hi = n; lo < hi;) {
          zigzag.push_back(ids[lo++]);
          if (lo < hi) zigzag.push_back(ids[--hi]);
        }
        ids = zigzag;
      }
      ReplicaSet r;
      std::set<uint64_t> model;
      for (int round = 0; round < 2; ++round) {
        for (uint64_t id : ids) {
          ASSERT_TRUE(r.insert(id));
          ASSERT_FALSE(r.insert(id));
          model.insert(id);
          ASSERT_TRUE(sameAs(r, model));
        }
        // Between the ids: none of them there.
        for (uint64_t id : ids) {
          ASSERT_FALSE(r.count(id + 1));
          ASSERT_FALSE(r.erase(id + 1));
        }
        ASSERT_TRUE(sameAs(r, model));
        while (!model.empty()) {
          auto it = model.begin();
          switch (rng() % 3) {
            case 0:  // front
              break;
            case 1:  // back
              it = std::prev(model.end());
              break;
            default:  // anywhere
              std::advance(it, rng() % model.size());
              break;
          }
          uint64_t id = *it;
          ASSERT_TRUE(r.erase(id));
          ASSERT_FALSE(r.erase(id));
          model.erase(it);
          ASSERT_TRUE(sameAs(r, model));
        }
      }
    }
  }
}

TEST(ReplicaSetTest, MoveConstruction) {
  for (size_t n : {0, 1, 2, 3, 4, 6, 7, 13, 40}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    std::set<uint64_t> model;
    ReplicaSet src;
    fillBoth(src, model, n, 1, 7);
    ReplicaSet dst(std::move(src));
    EXPECT_TRUE(sameAs(dst, model));
    EXPECT_TRUE(sameAs(src, {}));
    // The moved-from set is a set of its own: filling it (onto a heap of its own) leaves the
    // new one alone, and the other way round.
    std::set<uint64_t> other;
    fillBoth(src, other, 20, 1000, 1);
    EXPECT_TRUE(sameAs(src, other));
    EXPECT_TRUE(sameAs(dst, model));
    insertBoth(dst, model, {999});
    if (n > 0) {
      dst.erase(1);
      model.erase(1);
    }
    EXPECT_TRUE(sameAs(dst, model));
    EXPECT_TRUE(sameAs(src, other));
  }

  // Moved by a vector as it grows (ReplicaSet's move is noexcept, so the vector moves).
  std::mt19937_64 rng(0x5eed0003);
  std::vector<ReplicaSet> sets;
  std::vector<std::set<uint64_t>> models;
  for (int i = 0; i < 300; ++i) {
    sets.emplace_back();
    models.emplace_back();
    size_t n = rng() % 20;
    for (size_t j = 0; j < n; ++j) {
      uint64_t id = rng() % 1000;
      sets.back().insert(id);
      models.back().insert(id);
    }
  }
  for (size_t i = 0; i < sets.size(); ++i) ASSERT_TRUE(sameAs(sets[i], models[i])) << i;
}

TEST(ReplicaSetTest, MoveAssignment) {
  // Every pairing of inline (0..3) and heap-backed (4 and more) source and destination; the
  // destination's own heap must be released (LeakSanitizer) and the source's not freed twice.
  const size_t kSizes[] = {0, 2, 3, 4, 6, 7, 13, 25};
  for (size_t srcN : kSizes) {
    for (size_t dstN : kSizes) {
      SCOPED_TRACE(::testing::Message() << "from " << srcN << " into " << dstN);
      std::set<uint64_t> srcModel, dstModel;
      ReplicaSet src, dst;
      fillBoth(src, srcModel, srcN, 2, 3);
      fillBoth(dst, dstModel, dstN, 5000, 1);
      ASSERT_TRUE(sameAs(dst, dstModel));
      dst = std::move(src);
      EXPECT_TRUE(sameAs(dst, srcModel));
      EXPECT_TRUE(sameAs(src, {}));
      // Both go on independently.
      std::set<uint64_t> refill;
      fillBoth(src, refill, 10, 100000, 1);
      EXPECT_TRUE(sameAs(src, refill));
      EXPECT_TRUE(sameAs(dst, srcModel));
      insertBoth(dst, srcModel, {1});
      EXPECT_TRUE(sameAs(dst, srcModel));
      // And back the other way.
      src = std::move(dst);
      EXPECT_TRUE(sameAs(src, srcModel));
      EXPECT_TRUE(sameAs(dst, {}));
    }
  }

  // Onto itself: no change.
  for (size_t n : {2, 9}) {
    std::set<uint64_t> model;
    ReplicaSet r;
    for (size_t i = 0; i < n; ++i) {
      r.insert(i * 11);
      model.insert(i * 11);
    }
    ReplicaSet& alias = r;
    r = std::move(alias);
    EXPECT_TRUE(sameAs(r, model));
  }
}

TEST(ReplicaSetTest, Clear) {
  for (size_t n : {0, 1, 3, 4, 12, 50}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    ReplicaSet r;
    for (size_t i = 0; i < n; ++i) r.insert(i + 1);
    r.clear();
    EXPECT_TRUE(sameAs(r, {}));
    EXPECT_EQ(r.begin(), r.end());
    for (size_t i = 0; i < n; ++i) EXPECT_FALSE(r.count(i + 1));
    EXPECT_FALSE(r.erase(1));
    // Reused after the clear, past its old size.
    std::set<uint64_t> model;
    for (uint64_t id = 200; id > 100; id -= 3) {
      r.insert(id);
      model.insert(id);
      ASSERT_TRUE(sameAs(r, model));
    }
    r.clear();
    EXPECT_TRUE(sameAs(r, {}));
  }
}

TEST(ReplicaSetTest, IdsUpToUint32Max) {
  const uint64_t kMax = UINT32_MAX;
  std::set<uint64_t> model;
  ReplicaSet r;
  for (uint64_t id : {kMax, uint64_t{0}, kMax - 1, uint64_t{1} << 31, uint64_t{1}, kMax - 2}) {
    EXPECT_TRUE(r.insert(id)) << id;
    model.insert(id);
    ASSERT_TRUE(sameAs(r, model));
  }
  EXPECT_FALSE(r.insert(kMax));
  EXPECT_EQ(*(r.end() - 1), UINT32_MAX);
  EXPECT_EQ(*r.begin(), 0u);

  // An id above 32 bits is refused and changes nothing; it is not confused with the id of its
  // low 32 bits (0, 1, 2^31 and UINT32_MAX are in the set).
  for (uint64_t wide : {kMax + 1, kMax + 2, (uint64_t{1} << 32) + (uint64_t{1} << 31),
                        (uint64_t{1} << 33) - 1, uint64_t{UINT64_MAX}}) {
    SCOPED_TRACE(wide);
    EXPECT_THROW(r.insert(wide), kj::Exception);
    EXPECT_FALSE(r.count(wide));
    EXPECT_FALSE(r.erase(wide));
    EXPECT_TRUE(sameAs(r, model));
  }
  // Also while inline.
  ReplicaSet small = filled({0, kMax});
  EXPECT_THROW(small.insert(kMax + 1), kj::Exception);
  EXPECT_TRUE(sameAs(small, {0, kMax}));

  EXPECT_TRUE(r.erase(kMax));
  model.erase(kMax);
  EXPECT_TRUE(sameAs(r, model));
  EXPECT_TRUE(r.erase(0));
  model.erase(0);
  EXPECT_TRUE(sameAs(r, model));
}

TEST(ReplicaSetTest, TooManyReplicasThrowsAndKeepsContents) {
  ReplicaSet r;
  std::set<uint64_t> model;
  bool threw = false;
  for (uint64_t id = 1; id <= 1000 && !threw; ++id) {
    try {
      r.insert(id);
      model.insert(id);
    } catch (const kj::Exception&) {
      threw = true;
    }
  }
  ASSERT_TRUE(threw);
  // Well beyond any replication goal, within the one-byte count.
  EXPECT_GE(r.size(), 128u);
  EXPECT_LE(r.size(), 255u);
  EXPECT_TRUE(sameAs(r, model));
  // Still usable.
  EXPECT_TRUE(r.erase(50));
  model.erase(50);
  EXPECT_TRUE(r.insert(50));
  model.insert(50);
  EXPECT_TRUE(sameAs(r, model));
}

// ---------------------------------------------------------------------------------------
// ChunkTable

struct Entry {
  uint64_t key = 0;
  uint64_t value = 0;
};
struct EntryKey {
  uint64_t& operator()(Entry& e) const { return e.key; }
};
using Table = ChunkTable<Entry, EntryKey>;
using Model = std::map<uint64_t, uint64_t>;

// The whole table against the model: by a walk of the slots, by forEach (which must visit
// the same entries in the same order), and by find/contains/at of every key in the model,
// which must give the entry the walk found.
::testing::AssertionResult sameAs(Table& t, const Model& model) {
  if (t.size() != model.size() || t.empty() != model.empty()) {
    return ::testing::AssertionFailure() << "size " << t.size() << ", want " << model.size();
  }
  if (t.slots() < t.size()) {
    return ::testing::AssertionFailure() << t.slots() << " slots for " << t.size() << " entries";
  }
  std::map<uint64_t, Entry*> walked;
  std::vector<Entry*> order;
  for (size_t i = 0; i < t.slots(); ++i) {
    Entry* e = t.atSlot(i);
    if (e == nullptr) continue;
    if (e->key == 0) return ::testing::AssertionFailure() << "slot " << i << " has key 0";
    if (!walked.emplace(e->key, e).second) {
      return ::testing::AssertionFailure() << "key " << e->key << " in two slots";
    }
    order.push_back(e);
  }
  if (walked.size() != model.size()) {
    return ::testing::AssertionFailure()
           << "the slot walk finds " << walked.size() << " entries, want " << model.size();
  }
  auto w = walked.begin();
  for (auto& [key, value] : model) {
    if (w->first != key || w->second->value != value) {
      return ::testing::AssertionFailure() << "the slot walk has " << w->first << "="
                                           << w->second->value << ", want " << key << "=" << value;
    }
    ++w;
  }
  std::vector<Entry*> visited;
  t.forEach([&](Entry& e) { visited.push_back(&e); });
  if (visited != order) {
    return ::testing::AssertionFailure() << "forEach visits " << visited.size()
                                         << " entries, not the slot walk's " << order.size();
  }
  for (auto& [key, e] : walked) {
    if (t.find(key) != e) return ::testing::AssertionFailure() << "find(" << key << ")";
    if (!t.contains(key)) return ::testing::AssertionFailure() << "contains(" << key << ")";
    if (&t.at(key) != e) return ::testing::AssertionFailure() << "at(" << key << ")";
  }
  return ::testing::AssertionSuccess();
}

// One random operation on both; `key` may or may not be there.
void step(Table& t, Model& model, std::mt19937_64& rng, uint64_t key, unsigned insertPercent) {
  unsigned dice = rng() % 100;
  auto it = model.find(key);
  if (dice < insertPercent) {
    size_t before = t.size();
    Entry& e = t[key];
    ASSERT_EQ(e.key, key);
    if (it == model.end()) {
      // A new entry starts from Entry(): in a reused slot too.
      ASSERT_EQ(e.value, 0u) << "new entry " << key << " holds an old value";
      ASSERT_EQ(t.size(), before + 1);
    } else {
      ASSERT_EQ(e.value, it->second) << key;
      ASSERT_EQ(t.size(), before);
    }
    e.value = rng() | 1;
    model[key] = e.value;
  } else if (dice < insertPercent + (100 - insertPercent) / 2) {
    ASSERT_EQ(t.erase(key), it != model.end()) << "erase " << key;
    if (it != model.end()) model.erase(it);
    ASSERT_EQ(t.find(key), nullptr) << key;
  } else if (dice < 95) {
    Entry* e = t.find(key);
    ASSERT_EQ(e != nullptr, it != model.end()) << "find " << key;
    ASSERT_EQ(t.contains(key), it != model.end()) << "contains " << key;
    if (e != nullptr) {
      ASSERT_EQ(e->key, key);
      ASSERT_EQ(e->value, it->second) << key;
    }
  } else {
    if (it == model.end()) {
      // Rarely: a kj::Exception is dear (it takes a stack trace).
      if (rng() % 16 == 0) {
        ASSERT_THROW(t.at(key), kj::Exception) << key;
      }
    } else {
      ASSERT_EQ(t.at(key).value, it->second) << key;
    }
  }
}

TEST(ChunkTableTest, EmptyTable) {
  Table t;
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.slots(), 0u);
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_EQ(t.find(0), nullptr);
  EXPECT_FALSE(t.contains(1));
  EXPECT_FALSE(t.erase(1));
  EXPECT_FALSE(t.erase(0));
  EXPECT_THROW(t.at(uint64_t{1}), kj::Exception);
  size_t visits = 0;
  t.forEach([&](Entry&) { ++visits; });
  EXPECT_EQ(visits, 0u);
  EXPECT_TRUE(sameAs(t, {}));
}

TEST(ChunkTableTest, SequentialKeysMatchStdMap) {
  // Chunk handles are handed out in sequence: 1..N, most of them erased (files deleted), new
  // ones after them taking the freed slots, then everything erased and the table refilled.
  std::mt19937_64 rng(0x5eed0011);
  const uint64_t N = 50000;
  Table t;
  Model model;
  for (uint64_t k = 1; k <= N; ++k) {
    Entry& e = t[k];
    ASSERT_EQ(e.key, k);
    ASSERT_EQ(e.value, 0u);
    e.value = k * 3 + 1;
    model[k] = k * 3 + 1;
    ASSERT_EQ(t.size(), k);
    if (k % 4999 == 0 || k < 200) {
      ASSERT_TRUE(sameAs(t, model)) << "after inserting " << k;
    }
  }
  ASSERT_TRUE(sameAs(t, model));
  EXPECT_EQ(t.slots(), N);
  for (uint64_t k = N + 1; k < N + 100; ++k) EXPECT_FALSE(t.contains(k));

  // Erase 60 % in random order.
  std::vector<uint64_t> keys;
  for (uint64_t k = 1; k <= N; ++k) keys.push_back(k);
  std::shuffle(keys.begin(), keys.end(), rng);
  size_t erased = N * 6 / 10;
  for (size_t i = 0; i < erased; ++i) {
    ASSERT_TRUE(t.erase(keys[i])) << keys[i];
    ASSERT_FALSE(t.erase(keys[i])) << keys[i];
    model.erase(keys[i]);
    if (i % 3001 == 0) {
      ASSERT_TRUE(sameAs(t, model)) << "after erasing " << i + 1;
    }
  }
  ASSERT_TRUE(sameAs(t, model));
  for (size_t i = 0; i < erased; ++i) ASSERT_FALSE(t.contains(keys[i])) << keys[i];

  // New handles after N take the freed slots: no slot beyond the N there were.
  for (uint64_t k = N + 1; k <= N + 20000; ++k) {
    Entry& e = t[k];
    ASSERT_EQ(e.value, 0u) << k;
    e.value = k ^ 0xabcdef;
    model[k] = k ^ 0xabcdef;
    if (k % 2999 == 0) {
      ASSERT_TRUE(sameAs(t, model)) << "after inserting " << k;
    }
  }
  ASSERT_TRUE(sameAs(t, model));
  EXPECT_EQ(t.slots(), N);

  // Everything erased in random order; the last few one by one.
  keys.clear();
  for (auto& [k, v] : model) keys.push_back(k);
  std::shuffle(keys.begin(), keys.end(), rng);
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(t.erase(keys[i])) << keys[i];
    model.erase(keys[i]);
    if (i % 2503 == 0 || model.size() < 100) {
      ASSERT_TRUE(sameAs(t, model)) << i;
    }
  }
  ASSERT_TRUE(t.empty());
  for (size_t i = 0; i < t.slots(); ++i) ASSERT_EQ(t.atSlot(i), nullptr) << i;

  // And refilled, with handles from where they left off.
  for (uint64_t k = N + 20001; k <= N + 60000; ++k) {
    ASSERT_EQ(t[k].value, 0u);
    t[k].value = k;
    model[k] = k;
  }
  ASSERT_TRUE(sameAs(t, model));
  EXPECT_EQ(t.slots(), N);
}

TEST(ChunkTableTest, RandomOperationsMatchStdMap) {
  std::mt19937_64 rng(0x5eed0012);
  Table t;
  Model model;
  // Phases: dense keys (mostly hits), a wider range (growth through several rehashes),
  // arbitrary 64-bit keys (UINT64_MAX among them), each growing or shrinking the table.
  struct Phase {
    int kind;  // 0: [1, range], 1: any 64-bit key, 2: keys already there or just erased
    uint64_t range;
    unsigned insertPercent;
    int ops;
  };
  const Phase kPhases[] = {
      {0, 300, 60, 20000}, {0, 3000, 70, 30000},   {0, 100000, 90, 60000}, {1, 0, 80, 30000},
      {2, 0, 20, 40000},   {0, 100000, 50, 40000}, {0, 100000, 15, 60000}, {0, 1000000, 85, 60000},
      {2, 0, 10, 80000},   {0, 50, 55, 20000},
  };
  std::vector<uint64_t> recent;  // keys touched lately, for kind 2
  size_t largest = 0;
  for (size_t p = 0; p < std::size(kPhases); ++p) {
    const Phase& phase = kPhases[p];
    for (int op = 0; op < phase.ops; ++op) {
      uint64_t key;
      if (phase.kind == 0) {
        key = 1 + rng() % phase.range;
      } else if (phase.kind == 1) {
        key = rng() % 64 == 0 ? UINT64_MAX - rng() % 4 : rng();
        if (key == 0) key = 1;
      } else {
        key = recent.empty() ? 1 : recent[rng() % recent.size()];
      }
      if (recent.size() < 4096) {
        recent.push_back(key);
      } else {
        recent[rng() % recent.size()] = key;
      }
      step(t, model, rng, key, phase.insertPercent);
      if (::testing::Test::HasFatalFailure()) {
        FAIL() << "phase " << p << " op " << op << " key " << key;
      }
      largest = std::max(largest, model.size());
      if (op % 8192 == 8191) {
        ASSERT_TRUE(sameAs(t, model)) << "phase " << p << " op " << op;
      }
    }
    ASSERT_TRUE(sameAs(t, model)) << "end of phase " << p;
  }
  EXPECT_GT(largest, 50000u);
  EXPECT_LE(t.slots(), largest);  // freed slots are reused before new ones are made
}

// The splitmix64 finalizer the table hashes with, to make keys whose home slots fall
// together. Should the table's hash change, these keys are merely ordinary ones.
uint64_t splitmix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

TEST(ChunkTableTest, ClusteredKeysAcrossTheIndexEnd) {
  // Keys whose home is one of the last two or the first two slots of the index, whatever its
  // size up to 4096, so that they form one long run wrapping from the end of the index to
  // its start; among them ordinary sequential keys whose homes the run covers. Erasing from
  // the run shifts entries back across the wrap, and must never move one before its home.
  std::mt19937_64 rng(0x5eed0013);
  std::vector<uint64_t> clustered;
  for (uint64_t k = 1; clustered.size() < 300; ++k) {
    uint64_t low = splitmix(k) & 4095;
    if (low >= 4094 || low <= 1) clustered.push_back(k);
  }
  Table t;
  Model model;
  for (int round = 0; round < 3; ++round) {
    for (int op = 0; op < 40000; ++op) {
      uint64_t key = rng() % 3 == 0 ? 1 + rng() % 2000 : clustered[rng() % clustered.size()];
      step(t, model, rng, key, op < 10000 ? 75 : 45);
      if (::testing::Test::HasFatalFailure()) FAIL() << "round " << round << " op " << op;
      if (op % 1000 == 999) {
        ASSERT_TRUE(sameAs(t, model)) << "round " << round << " op " << op;
      }
    }
    // Empty the table from the run's middle outwards and fill it again.
    std::vector<uint64_t> keys;
    for (auto& [k, v] : model) keys.push_back(k);
    std::shuffle(keys.begin(), keys.end(), rng);
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE(t.erase(keys[i]));
      model.erase(keys[i]);
      if (i % 97 == 0) {
        ASSERT_TRUE(sameAs(t, model)) << "round " << round << " erase " << i;
      }
    }
    ASSERT_TRUE(sameAs(t, model));
  }
}

TEST(ChunkTableTest, EntriesStayAtTheirAddress) {
  std::mt19937_64 rng(0x5eed0014);
  Table t;
  Entry& first = t[7];
  first.value = 4242;
  Entry* const firstAddress = &first;
  std::map<uint64_t, Entry*> pinned;
  for (uint64_t k = 1; k <= 1000; ++k) {
    uint64_t key = k * 7919 + 1000000000;
    Entry& e = t[key];
    e.value = ~key;
    pinned[key] = &e;
  }
  // Many more entries (several rehashes and new pages), half of them erased again, their
  // slots taken by new ones, and each pinned entry looked up again on the way.
  std::vector<uint64_t> others;
  for (int round = 0; round < 4; ++round) {
    for (int i = 0; i < 40000; ++i) {
      uint64_t key = 1 + rng() % (uint64_t{1} << 40);
      if (key == 7 || pinned.count(key)) continue;
      t[key].value = key;
      others.push_back(key);
    }
    std::shuffle(others.begin(), others.end(), rng);
    for (size_t i = 0; i < others.size() / 2; ++i) t.erase(others[i]);
    others.erase(others.begin(), others.begin() + others.size() / 2);

    ASSERT_EQ(t.find(7), firstAddress);
    ASSERT_EQ(&t[7], firstAddress);
    ASSERT_EQ(&t.at(uint64_t{7}), firstAddress);
    ASSERT_EQ(firstAddress->key, 7u);
    ASSERT_EQ(firstAddress->value, 4242u);
    for (auto& [key, e] : pinned) {
      ASSERT_EQ(t.find(key), e) << "round " << round << " key " << key;
      ASSERT_EQ(e->key, key);
      ASSERT_EQ(e->value, ~key);
    }
  }
  EXPECT_GT(t.size(), 30000u);
  // Erasing some pinned entries moves none of the others.
  size_t i = 0;
  for (auto it = pinned.begin(); it != pinned.end();) {
    if (i++ % 2 == 0) {
      ASSERT_TRUE(t.erase(it->first));
      it = pinned.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [key, e] : pinned) {
    ASSERT_EQ(t.find(key), e) << key;
    ASSERT_EQ(e->value, ~key);
  }
  ASSERT_EQ(t.find(7), firstAddress);
}

TEST(ChunkTableTest, MissingKeysAndKeyZero) {
  Table t;
  Model model;
  for (uint64_t k = 1; k <= 500; ++k) {
    t[k * 2].value = k;
    model[k * 2] = k;
  }
  for (uint64_t k = 1; k <= 500; ++k) {
    EXPECT_THROW(t.at(k * 2 + 1), kj::Exception) << k * 2 + 1;
    EXPECT_EQ(t.at(k * 2).value, k);
  }
  EXPECT_THROW(t.at(uint64_t{UINT64_MAX}), kj::Exception);
  EXPECT_THROW(t.at(uint64_t{1001}), kj::Exception);
  ASSERT_TRUE(t.erase(10));
  model.erase(10);
  EXPECT_THROW(t.at(uint64_t{10}), kj::Exception);

  // Key 0 marks a free slot: never found, never made.
  EXPECT_EQ(t.find(0), nullptr);
  EXPECT_FALSE(t.contains(0));
  EXPECT_FALSE(t.erase(0));
  EXPECT_THROW(t.at(uint64_t{0}), kj::Exception);
  EXPECT_THROW(t[0], kj::Exception);
  EXPECT_TRUE(sameAs(t, model));

  // operator[] on a key that is there: the same entry, nothing made.
  Entry* e = t.find(20);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(&t[20], e);
  EXPECT_EQ(t[20].value, 10u);
  EXPECT_TRUE(sameAs(t, model));
}

TEST(ChunkTableTest, ClearThenReuse) {
  std::mt19937_64 rng(0x5eed0015);
  Table t;
  t.clear();  // on an empty table
  EXPECT_TRUE(sameAs(t, {}));
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    Model model;
    std::vector<uint64_t> keys;
    for (int i = 0; i < 20000; ++i) {
      uint64_t key = round == 1 ? static_cast<uint64_t>(i + 1) : (rng() | 1);
      keys.push_back(key);
      step(t, model, rng, key, 100);
      ASSERT_FALSE(::testing::Test::HasFatalFailure());
    }
    for (int i = 0; i < 30000; ++i) {
      step(t, model, rng, keys[rng() % keys.size()], 40);
      ASSERT_FALSE(::testing::Test::HasFatalFailure());
    }
    ASSERT_TRUE(sameAs(t, model));
    t.clear();
    EXPECT_TRUE(sameAs(t, {}));
    EXPECT_EQ(t.slots(), 0u);
    for (uint64_t key : keys) ASSERT_EQ(t.find(key), nullptr) << key;
    EXPECT_FALSE(t.erase(keys[0]));
    EXPECT_THROW(t.at(keys[0]), kj::Exception);
  }
}

// An entry that owns memory, as the chunk manager's Chunk does (a ReplicaSet): erasing it
// must release that memory (LeakSanitizer) and a reused slot must start from T().
struct FatEntry {
  uint64_t key = 0;
  ReplicaSet replicas;
};
struct FatEntryKey {
  uint64_t& operator()(FatEntry& e) const { return e.key; }
};

TEST(ChunkTableTest, ErasedEntriesAreResetAndTheirSlotsReused) {
  std::mt19937_64 rng(0x5eed0016);
  ChunkTable<FatEntry, FatEntryKey> t;
  std::map<uint64_t, std::set<uint64_t>> model;
  for (int op = 0; op < 60000; ++op) {
    uint64_t key = 1 + rng() % 3000;
    auto it = model.find(key);
    if (rng() % 100 < 55) {
      FatEntry& e = t[key];
      if (it == model.end()) {
        ASSERT_TRUE(e.replicas.empty()) << "new entry " << key << " in a slot not reset";
        it = model.emplace(key, std::set<uint64_t>()).first;
      }
      size_t n = rng() % 12;  // inline or on the heap
      for (size_t i = 0; i < n; ++i) {
        uint64_t id = rng() % 40;
        e.replicas.insert(id);
        it->second.insert(id);
      }
    } else {
      ASSERT_EQ(t.erase(key), it != model.end());
      if (it != model.end()) model.erase(it);
    }
    if (op % 2000 == 1999) {
      ASSERT_EQ(t.size(), model.size());
      size_t seen = 0;
      t.forEach([&](FatEntry& e) {
        ++seen;
        auto m = model.find(e.key);
        ASSERT_NE(m, model.end()) << e.key;
        EXPECT_TRUE(sameAs(e.replicas, m->second)) << e.key;
      });
      ASSERT_EQ(seen, model.size());
    }
  }
  EXPECT_LE(t.slots(), 3000u);
}

// ---------------------------------------------------------------------------------------
// HandleSet

::testing::AssertionResult sameAs(const HandleSet& h, const std::set<uint64_t>& model) {
  if (h.size() != model.size() || h.empty() != model.empty()) {
    return ::testing::AssertionFailure() << "size " << h.size() << ", want " << model.size();
  }
  std::vector<uint64_t> want = listOf(model);
  std::vector<uint64_t> got = h.toVector();
  if (got != want) {
    auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
    ::testing::AssertionResult out = ::testing::AssertionFailure();
    out << "toVector has " << got.size() << " handles, want " << want.size()
        << "; first difference at " << (g - got.begin()) << ": ";
    if (g != got.end()) out << "got " << *g << " ";
    if (w != want.end()) out << "want " << *w;
    return out;
  }
  std::vector<uint64_t> visited;
  h.forEach([&](uint64_t x) { visited.push_back(x); });
  if (visited != want) return ::testing::AssertionFailure() << "forEach differs from the model";
  return ::testing::AssertionSuccess();
}

// contains() of every handle in the model and of the numbers next to each.
::testing::AssertionResult containsExactly(const HandleSet& h, const std::set<uint64_t>& model) {
  for (uint64_t x : model) {
    if (!h.contains(x)) return ::testing::AssertionFailure() << "contains(" << x << ") false";
    for (uint64_t y : {x - 1, x + 1}) {
      if (h.contains(y) != (model.count(y) == 1)) {
        return ::testing::AssertionFailure() << "contains(" << y << ") wrong";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(HandleSetTest, AscendingBulkInsertion) {
  HandleSet h;
  std::set<uint64_t> model;
  const uint64_t N = 150000;
  for (uint64_t i = 1; i <= N; ++i) {
    ASSERT_TRUE(h.insert(3 * i));
    model.insert(3 * i);
    if (i % 10007 == 0 || (i < 2100 && i % 97 == 0)) {
      ASSERT_TRUE(sameAs(h, model)) << i;
    }
  }
  ASSERT_TRUE(sameAs(h, model));
  ASSERT_TRUE(containsExactly(h, model));
  EXPECT_FALSE(h.contains(0));
  EXPECT_FALSE(h.contains(3 * N + 3));
  EXPECT_FALSE(h.contains(UINT64_MAX));
  // Again: nothing new.
  for (uint64_t i = 1; i <= N; ++i) ASSERT_FALSE(h.insert(3 * i)) << 3 * i;
  ASSERT_TRUE(sameAs(h, model));
  // Erasing what is not there changes nothing.
  for (uint64_t i = 0; i <= N; ++i) ASSERT_FALSE(h.erase(3 * i + 1));
  ASSERT_FALSE(h.erase(0));
  ASSERT_FALSE(h.erase(UINT64_MAX));
  ASSERT_TRUE(sameAs(h, model));
  // Then the gaps filled in, ascending: every block grows past BLOCK again.
  for (uint64_t i = 0; i <= N; ++i) {
    ASSERT_TRUE(h.insert(3 * i + 1));
    model.insert(3 * i + 1);
    if (i % 20011 == 0) {
      ASSERT_TRUE(sameAs(h, model)) << i;
    }
  }
  ASSERT_TRUE(sameAs(h, model));
  ASSERT_TRUE(containsExactly(h, model));
}

TEST(HandleSetTest, DescendingInsertion) {
  HandleSet h;
  std::set<uint64_t> model;
  const uint64_t N = 120000;
  for (uint64_t i = N; i >= 1; --i) {
    ASSERT_TRUE(h.insert(2 * i + 1000));
    model.insert(2 * i + 1000);
    if (i % 9973 == 0) {
      ASSERT_TRUE(sameAs(h, model)) << i;
    }
  }
  ASSERT_TRUE(sameAs(h, model));
  ASSERT_TRUE(containsExactly(h, model));
  // Below everything, and above.
  for (uint64_t x : {uint64_t{0}, uint64_t{1}, uint64_t{999}, uint64_t{UINT64_MAX}}) {
    ASSERT_TRUE(h.insert(x));
    model.insert(x);
  }
  ASSERT_TRUE(sameAs(h, model));
  ASSERT_TRUE(containsExactly(h, model));
}

TEST(HandleSetTest, RandomOperationsMatchStdSet) {
  std::mt19937_64 rng(0x5eed0021);
  HandleSet h;
  std::set<uint64_t> model;
  struct Phase {
    uint64_t range;
    unsigned insertPercent;
    int ops;
  };
  // Grow past 100,000 (many splits), churn, shrink (merges), grow again in a wider range.
  const Phase kPhases[] = {
      {400000, 85, 200000}, {400000, 50, 100000},     {400000, 10, 250000},
      {2000, 60, 20000},    {1ull << 40, 90, 150000}, {400000, 30, 100000},
  };
  size_t largest = 0;
  for (size_t p = 0; p < std::size(kPhases); ++p) {
    const Phase& phase = kPhases[p];
    for (int op = 0; op < phase.ops; ++op) {
      uint64_t x = rng() % phase.range;
      unsigned dice = rng() % 100;
      if (dice < phase.insertPercent) {
        ASSERT_EQ(h.insert(x), model.insert(x).second) << "insert " << x << " phase " << p;
      } else if (dice < 95) {
        // Erase mostly what is there.
        if (!model.empty() && rng() % 4 != 0) {
          auto it = model.lower_bound(x);
          if (it == model.end()) it = model.begin();
          x = *it;
        }
        ASSERT_EQ(h.erase(x), model.erase(x) == 1) << "erase " << x << " phase " << p;
      } else {
        ASSERT_EQ(h.contains(x), model.count(x) == 1) << "contains " << x << " phase " << p;
      }
      largest = std::max(largest, model.size());
      if (op % 20000 == 19999) {
        ASSERT_TRUE(sameAs(h, model)) << "phase " << p << " op " << op;
      }
    }
    ASSERT_TRUE(sameAs(h, model)) << "end of phase " << p;
  }
  EXPECT_GT(largest, 100000u);
}

TEST(HandleSetTest, RandomErasureToEmptyAndRefill) {
  std::mt19937_64 rng(0x5eed0022);
  HandleSet h;
  std::set<uint64_t> model;
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    std::vector<uint64_t> keys;
    for (uint64_t x = 1; x <= 130000; ++x) {
      if (rng() % 8 != 0) keys.push_back(x * 5 + round);
    }
    if (round == 1) std::shuffle(keys.begin(), keys.end(), rng);  // refill in random order
    for (uint64_t x : keys) {
      ASSERT_TRUE(h.insert(x));
      model.insert(x);
    }
    ASSERT_TRUE(sameAs(h, model));
    ASSERT_TRUE(containsExactly(h, model));
    std::shuffle(keys.begin(), keys.end(), rng);
    for (size_t i = 0; i < keys.size(); ++i) {
      ASSERT_TRUE(h.erase(keys[i])) << keys[i];
      ASSERT_FALSE(h.erase(keys[i])) << keys[i];
      model.erase(keys[i]);
      if (i % 4999 == 0 || model.size() < 1500) {
        ASSERT_TRUE(sameAs(h, model)) << "after erasing " << i + 1;
      }
      if (i % 20011 == 0) {
        ASSERT_TRUE(containsExactly(h, model)) << "after erasing " << i + 1;
      }
    }
    ASSERT_TRUE(h.empty());
    ASSERT_TRUE(sameAs(h, {}));
    EXPECT_FALSE(h.contains(keys[0]));
    EXPECT_FALSE(h.erase(keys[0]));
  }
}

TEST(HandleSetTest, SparseBlocksAfterErasure) {
  // Erase all but a few handles of every block, in ascending and descending order, so that
  // small blocks sit next to full ones; then insert into the gaps between the survivors.
  std::mt19937_64 rng(0x5eed0023);
  for (int direction = 0; direction < 2; ++direction) {
    SCOPED_TRACE(::testing::Message() << "direction " << direction);
    HandleSet h;
    std::set<uint64_t> model;
    const uint64_t N = 200000;
    for (uint64_t x = 1; x <= N; ++x) {
      h.insert(x);
      model.insert(x);
    }
    std::vector<uint64_t> doomed;
    for (uint64_t x = 1; x <= N; ++x) {
      if (x % 600 != 0) doomed.push_back(x);
    }
    if (direction == 1) std::reverse(doomed.begin(), doomed.end());
    for (size_t i = 0; i < doomed.size(); ++i) {
      ASSERT_TRUE(h.erase(doomed[i]));
      model.erase(doomed[i]);
      if (i % 9973 == 0) {
        ASSERT_TRUE(sameAs(h, model)) << i;
      }
    }
    ASSERT_TRUE(sameAs(h, model));
    ASSERT_TRUE(containsExactly(h, model));
    for (int i = 0; i < 150000; ++i) {
      uint64_t x = 1 + rng() % (N + 1000);
      ASSERT_EQ(h.insert(x), model.insert(x).second) << x;
      if (i % 9973 == 0) {
        ASSERT_TRUE(sameAs(h, model)) << i;
      }
    }
    ASSERT_TRUE(sameAs(h, model));
    ASSERT_TRUE(containsExactly(h, model));
    // Erase from the front and from the back alternately down to empty.
    while (!model.empty()) {
      uint64_t x = model.size() % 2 ? *model.begin() : *model.rbegin();
      ASSERT_TRUE(h.erase(x)) << x;
      model.erase(x);
      if (model.size() % 7919 == 0) {
        ASSERT_TRUE(sameAs(h, model)) << model.size();
      }
    }
    ASSERT_TRUE(sameAs(h, {}));
  }
}

TEST(HandleSetTest, AssignedInOrderThenChanged) {
  std::mt19937_64 rng(0x5eed0023);
  for (size_t n : {0, 1, 511, 512, 513, 5000}) {
    std::set<uint64_t> model;
    while (model.size() < n) model.insert(rng() % 100000);
    HandleSet h;
    h.insert(123456789);  // replaced, not kept
    h.assignSorted(std::vector<uint64_t>(model.begin(), model.end()));
    ASSERT_TRUE(sameAs(h, model)) << n;
    ASSERT_TRUE(containsExactly(h, model)) << n;
    // Blocks made whole work as inserted ones do: splits, merges, erasing to empty.
    for (int op = 0; op < 20000; ++op) {
      uint64_t x = rng() % 100000;
      if (rng() % 2) {
        ASSERT_EQ(h.insert(x), model.insert(x).second) << "insert " << x;
      } else {
        ASSERT_EQ(h.erase(x), model.erase(x) == 1) << "erase " << x;
      }
    }
    ASSERT_TRUE(sameAs(h, model)) << n;
    ASSERT_TRUE(containsExactly(h, model)) << n;
  }
  HandleSet h;
  EXPECT_ANY_THROW(h.assignSorted({1, 3, 2}));
  EXPECT_ANY_THROW(h.assignSorted({1, 2, 2}));
}

TEST(HandleSetTest, TakenFromAPointRoundAndRound) {
  std::mt19937_64 rng(0x5eed0024);
  for (size_t n : {0, 1, 2, 1023, 1024, 1025, 6000}) {
    std::set<uint64_t> model;
    HandleSet h;
    while (model.size() < n) {
      uint64_t x = rng() % 50000;
      model.insert(x);
      h.insert(x);
    }
    for (int probe = 0; probe < 200; ++probe) {
      uint64_t from = rng() % 50010;
      size_t max = probe % 3 == 0 ? n + 5 : rng() % (n + 2);
      // The model's answer: from `from` up, then from the smallest up to `from`.
      std::vector<uint64_t> want;
      for (auto it = model.lower_bound(from); it != model.end() && want.size() < max; ++it)
        want.push_back(*it);
      for (auto it = model.begin(); it != model.end() && *it < from && want.size() < max; ++it)
        want.push_back(*it);
      ASSERT_EQ(h.takeFrom(from, max), want) << n << " from " << from << " max " << max;
    }
    // Walking with the next handle as the cursor visits every handle once a round.
    if (n == 0) continue;
    std::vector<uint64_t> seen;
    uint64_t cursor = rng() % 50000;
    while (seen.size() < 2 * n) {
      auto part = h.takeFrom(cursor, 7);
      ASSERT_FALSE(part.empty());
      seen.insert(seen.end(), part.begin(), part.end());
      cursor = part.back() + 1;
    }
    EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.begin() + n), model) << n;
    EXPECT_EQ(std::set<uint64_t>(seen.begin() + n, seen.begin() + 2 * n), model) << n;
  }
  HandleSet edge;
  edge.insert(UINT64_MAX);
  edge.insert(0);
  EXPECT_EQ(edge.takeFrom(UINT64_MAX, 5), (std::vector<uint64_t>{UINT64_MAX, 0}));
  EXPECT_EQ(edge.takeFrom(1, 1), (std::vector<uint64_t>{UINT64_MAX}));
}

TEST(HandleSetTest, ExtremeHandlesAndClear) {
  HandleSet h;
  std::set<uint64_t> model;
  EXPECT_TRUE(sameAs(h, model));
  EXPECT_FALSE(h.contains(0));
  EXPECT_FALSE(h.erase(0));
  EXPECT_FALSE(h.erase(UINT64_MAX));
  for (uint64_t x : {uint64_t{UINT64_MAX}, uint64_t{0}, uint64_t{UINT64_MAX - 1}, uint64_t{1}}) {
    ASSERT_TRUE(h.insert(x));
    ASSERT_FALSE(h.insert(x));
    model.insert(x);
    ASSERT_TRUE(sameAs(h, model));
  }
  EXPECT_TRUE(h.contains(0));
  EXPECT_TRUE(h.contains(UINT64_MAX));
  EXPECT_FALSE(h.contains(2));
  for (int round = 0; round < 2; ++round) {
    for (uint64_t x = 10; x < 5000; x += 2) {
      h.insert(x);
      model.insert(x);
    }
    ASSERT_TRUE(sameAs(h, model));
    ASSERT_TRUE(containsExactly(h, model));
    h.clear();
    model.clear();
    ASSERT_TRUE(sameAs(h, model));
    EXPECT_FALSE(h.contains(10));
    EXPECT_FALSE(h.erase(10));
  }
  // Reused after a clear, past a split.
  for (uint64_t x = 3000; x > 0; --x) {
    ASSERT_TRUE(h.insert(x * 7));
    model.insert(x * 7);
  }
  ASSERT_TRUE(sameAs(h, model));
  ASSERT_TRUE(containsExactly(h, model));
}

// ---------------------------------------------------------------------------------------
// ReportedCopies

::testing::AssertionResult sameAs(const ReportedCopies& c,
                                  const std::map<uint64_t, uint64_t>& model) {
  std::map<uint64_t, uint64_t> walked;
  size_t visits = 0;
  c.forEach([&](uint64_t server, uint64_t version) {
    walked[server] = version;
    ++visits;
  });
  if (walked != model || visits != model.size() || c.size() != model.size() ||
      c.empty() != model.empty()) {
    return ::testing::AssertionFailure()
           << "size " << c.size() << ", walked " << visits << " copies, want " << model.size();
  }
  for (auto& [server, version] : model) {
    if (c.version(server) != version) {
      return ::testing::AssertionFailure()
             << "version(" << server << ") is " << c.version(server) << ", want " << version;
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(ReportedCopiesTest, RandomOperationsMatchStdMap) {
  // Few servers so that sets, updates and erasures of present ones are frequent, and up to
  // eight copies so that the heap part fills and empties again and again.
  std::mt19937_64 random(7);
  ReportedCopies c;
  std::map<uint64_t, uint64_t> model;
  size_t spilled = 0;
  for (int step = 0; step < 20000; ++step) {
    uint64_t server = random() % 9;
    if (random() % 3 == 0) {
      EXPECT_EQ(c.erase(server), model.erase(server) == 1) << "step " << step;
    } else {
      uint64_t version = 1 + random() % 5;
      c.set(server, version);
      model[server] = version;
    }
    if (model.size() > 3) ++spilled;
    ASSERT_TRUE(sameAs(c, model)) << "step " << step;
    EXPECT_EQ(c.version(100), 0u);
  }
  EXPECT_GT(spilled, 1000u);
}

TEST(ReportedCopiesTest, ErasingAnInlineCopyTakesOneFromTheHeap) {
  ReportedCopies c;
  std::map<uint64_t, uint64_t> model;
  for (uint64_t s = 1; s <= 5; ++s) {
    c.set(s, 10 + s);
    model[s] = 10 + s;
  }
  for (uint64_t s : {1, 2, 3, 4, 5}) {
    ASSERT_TRUE(c.erase(s));
    model.erase(s);
    ASSERT_TRUE(sameAs(c, model)) << "after erasing " << s;
    EXPECT_FALSE(c.erase(s));
  }
  EXPECT_TRUE(c.empty());
  // Moved with its heap part, and reset by the table's erase (T()).
  for (uint64_t s = 1; s <= 6; ++s) c.set(s, s);
  ReportedCopies moved = std::move(c);
  model.clear();
  for (uint64_t s = 1; s <= 6; ++s) model[s] = s;
  EXPECT_TRUE(sameAs(moved, model));
  moved = ReportedCopies();
  EXPECT_TRUE(sameAs(moved, {}));
  moved.set(UINT32_MAX, 1);
  EXPECT_EQ(moved.version(UINT32_MAX), 1u);
  EXPECT_THROW(moved.set(uint64_t{UINT32_MAX} + 1, 1), kj::Exception);
}

}  // namespace
}  // namespace cairn
