package io.socialrisk.neo4j;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Spliterators;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;

import org.neo4j.graphdb.Direction;
import org.neo4j.graphdb.Transaction;
import org.neo4j.internal.kernel.api.CursorFactory;
import org.neo4j.internal.kernel.api.NodeCursor;
import org.neo4j.internal.kernel.api.PropertyCursor;
import org.neo4j.internal.kernel.api.Read;
import org.neo4j.internal.kernel.api.RelationshipTraversalCursor;
import org.neo4j.internal.kernel.api.TokenRead;
import org.neo4j.kernel.api.KernelTransaction;
import org.neo4j.kernel.impl.coreapi.InternalTransaction;
import org.neo4j.storageengine.api.PropertySelection;
import org.neo4j.storageengine.api.RelationshipSelection;
import org.neo4j.values.storable.NumberValue;
import org.neo4j.values.storable.TextValue;
import org.neo4j.values.storable.Value;
import org.neo4j.procedure.Context;
import org.neo4j.procedure.Description;
import org.neo4j.procedure.Mode;
import org.neo4j.procedure.Name;
import org.neo4j.procedure.Procedure;

/**
 * The edges a projection reads, as packed columns.
 *
 * <p>Cypher's columnar read (one list per column, {@code collect(id(u))}...) still sends one Bolt
 * value per edge and column, and the server spends most of the read building them. This procedure
 * walks the same relationships with the kernel's cursors (a node scan, each :User node's outgoing
 * relationships of the type, the three or four properties wanted) and sends each column of a batch
 * as one byte array (little-endian int64 or float64), which the client reads with
 * {@code numpy.frombuffer}.
 * The values are those of {@code ENCODED_LINKS} and {@code ENCODED_RELATIONS} in
 * {@code graph/store/neo4j/read.py}: {@code id()} of both ends, the row's {@code _seq}, the weight
 * (NaN where missing) and a time in epoch milliseconds ({@code nullMs} where missing).
 */
public class EncodedEdges {

    @Context
    public Transaction tx;

    /** One batch of edges: each column a packed array of {@code rows} values. */
    public static class Batch {
        public long rows;
        public byte[] seq;
        public byte[] src;
        public byte[] dst;
        public byte[] weight;
        public byte[] time;
        /** Relation kinds as int32 codes into {@link #kinds} (empty for links). */
        public byte[] kind;
        /** The kinds the codes of this batch name, in code order (codes are per batch). */
        public List<String> kinds;

        Batch(long rows, byte[] seq, byte[] src, byte[] dst, byte[] weight, byte[] time, byte[] kind, List<String> kinds) {
            this.rows = rows;
            this.seq = seq;
            this.src = src;
            this.dst = dst;
            this.weight = weight;
            this.time = time;
            this.kind = kind;
            this.kinds = kinds;
        }
    }

    @Procedure(name = "socialrisk.encodedEdges", mode = Mode.READ)
    @Description("socialrisk.encodedEdges(type, part, parts, nullMs, batch): the USES (type 'links') or RELATES "
            + "(type 'relations') relationships of the :User nodes with id(u) % parts = part, as packed columns")
    public Stream<Batch> encodedEdges(
            @Name("type") String type,
            @Name("part") long part,
            @Name("parts") long parts,
            @Name("nullMs") long nullMs,
            @Name(value = "batch", defaultValue = "500000") long batch) {
        final boolean relations;
        if ("links".equals(type)) {
            relations = false;
        } else if ("relations".equals(type)) {
            relations = true;
        } else {
            throw new IllegalArgumentException("type must be 'links' or 'relations', got '" + type + "'");
        }
        if (parts < 1 || part < 0 || part >= parts) {
            throw new IllegalArgumentException("part must be in [0, parts) and parts >= 1, got part " + part + " of " + parts);
        }
        if (batch < 1) {
            throw new IllegalArgumentException("batch must be >= 1, got " + batch);
        }
        final KernelTransaction ktx = ((InternalTransaction) tx).kernelTransaction();
        final TokenRead tokens = ktx.tokenRead();
        final int userLabel = tokens.nodeLabel("User");
        final int relType = tokens.relationshipType(relations ? "RELATES" : "USES");
        final int seqKey = tokens.propertyKey("_seq");
        final int weightKey = tokens.propertyKey("weight");
        final int timeKey = tokens.propertyKey(relations ? "ts" : "last_seen");
        final int kindKey = tokens.propertyKey("kind");
        if (userLabel < 0 || relType < 0) { // no such label or type yet: an empty graph
            return Stream.empty();
        }
        final Read read = ktx.dataRead();
        final CursorFactory cursors = ktx.cursors();
        final NodeCursor nodes = cursors.allocateNodeCursor(ktx.cursorContext(), ktx.memoryTracker());
        final RelationshipTraversalCursor rels = cursors.allocateRelationshipTraversalCursor(ktx.cursorContext(), ktx.memoryTracker());
        final PropertyCursor props = cursors.allocatePropertyCursor(ktx.cursorContext(), ktx.memoryTracker());
        // the keys the database has (a key never written has no token and no values)
        final PropertySelection wanted = PropertySelection.selection(java.util.stream.IntStream
                .of(relations ? new int[] {seqKey, weightKey, timeKey, kindKey} : new int[] {seqKey, weightKey, timeKey})
                .filter(k -> k >= 0).toArray());
        final RelationshipSelection outgoing = RelationshipSelection.selection(relType, Direction.OUTGOING);
        read.allNodesScan(nodes);
        final int size = (int) Math.min(batch, 1 << 24);
        Runnable close = () -> {
            props.close();
            rels.close();
            nodes.close();
        };
        Iterator<Batch> batches = new Iterator<>() {
            boolean inNode = false;
            long srcId = -1;
            Batch next = null;
            boolean done = false;

            private Batch fill() {
                Columns c = new Columns(size, relations);
                while (c.rows < size) {
                    if (!inNode || !rels.next()) {
                        inNode = false;
                        if (!nodes.next()) {
                            break;
                        }
                        long id = nodes.nodeReference();
                        if (id % parts != part || !nodes.hasLabel(userLabel)) {
                            continue;
                        }
                        srcId = id;
                        nodes.relationships(rels, outgoing);
                        inNode = true;
                        continue;
                    }
                    long seq = -1L;
                    double weight = Double.NaN;
                    long time = nullMs;
                    String kind = null;
                    rels.properties(props, wanted);
                    while (props.next()) {
                        int key = props.propertyKey();
                        Value v = props.propertyValue();
                        if (key == seqKey) {
                            seq = ((NumberValue) v).longValue();
                        } else if (key == weightKey) {
                            weight = ((NumberValue) v).doubleValue();
                        } else if (key == timeKey) {
                            time = millis(v.asObjectCopy(), nullMs);
                        } else if (key == kindKey) {
                            kind = ((TextValue) v).stringValue();
                        }
                    }
                    c.seq.putLong(seq);
                    c.src.putLong(srcId);
                    c.dst.putLong(rels.otherNodeReference());
                    c.weight.putDouble(weight);
                    c.time.putLong(time);
                    if (relations) {
                        c.kind.putInt(c.code(kind));
                    }
                    c.rows++;
                }
                if (c.rows == 0) {
                    return null;
                }
                return c.batch();
            }

            @Override
            public boolean hasNext() {
                if (next == null && !done) {
                    next = fill();
                    if (next == null) {
                        done = true;
                        close.run();
                    }
                }
                return next != null;
            }

            @Override
            public Batch next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                Batch b = next;
                next = null;
                return b;
            }
        };
        return StreamSupport.stream(Spliterators.spliteratorUnknownSize(batches, 0), false).onClose(close);
    }

    static long millis(Object value, long nullMs) {
        if (value == null) {
            return nullMs;
        }
        if (value instanceof ZonedDateTime z) {
            return z.toInstant().toEpochMilli();
        }
        if (value instanceof OffsetDateTime o) {
            return o.toInstant().toEpochMilli();
        }
        if (value instanceof Instant i) {
            return i.toEpochMilli();
        }
        if (value instanceof LocalDateTime l) {
            return l.toInstant(ZoneOffset.UTC).toEpochMilli();
        }
        if (value instanceof Number n) {
            return n.longValue();
        }
        throw new IllegalArgumentException("a time property holds " + value.getClass().getSimpleName() + ", expected a datetime");
    }

    /** The columns of one batch being filled. */
    static final class Columns {
        final ByteBuffer seq;
        final ByteBuffer src;
        final ByteBuffer dst;
        final ByteBuffer weight;
        final ByteBuffer time;
        final ByteBuffer kind;
        final Map<String, Integer> codes = new HashMap<>();
        final List<String> kinds = new ArrayList<>();
        int rows = 0;

        Columns(int size, boolean relations) {
            seq = buffer(8L * size);
            src = buffer(8L * size);
            dst = buffer(8L * size);
            weight = buffer(8L * size);
            time = buffer(8L * size);
            kind = buffer(relations ? 4L * size : 0);
        }

        static ByteBuffer buffer(long bytes) {
            return ByteBuffer.allocate((int) bytes).order(ByteOrder.LITTLE_ENDIAN);
        }

        int code(String k) {
            Integer c = codes.get(k);
            if (c == null) {
                c = kinds.size();
                codes.put(k, c);
                kinds.add(k);
            }
            return c;
        }

        Batch batch() {
            return new Batch(rows, bytes(seq), bytes(src), bytes(dst), bytes(weight), bytes(time), bytes(kind), kinds);
        }

        static byte[] bytes(ByteBuffer b) {
            byte[] out = new byte[b.position()];
            System.arraycopy(b.array(), 0, out, 0, out.length);
            return out;
        }
    }
}
