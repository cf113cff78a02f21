package io.dsflow.job;

import io.dsflow.job.cli.Main;

/**
 * Entry point on a Flink cluster ({@code flink run -c io.dsflow.job.DsflowJob dsflow-flink-job.jar --config FILE}, or
 * the standalone-job container of docker-compose.yml): the same job as {@code dsflow run --config FILE}.
 */
public final class DsflowJob {
    private DsflowJob() {
    }

    public static void main(String[] args) {
        String[] run = new String[args.length + 1];
        run[0] = "run";
        System.arraycopy(args, 0, run, 1, args.length);
        int exit = Main.run(run, System.out, System.err);
        if (exit != 0) throw new IllegalStateException("dsflow job failed (exit " + exit + "); see the error above");
    }
}
